//! libFuzzer entry point of the `region` harness (see `shmq_fuzz::region`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmq_fuzz::region(data));
