//! libFuzzer entry point of the `topic` harness (see `shmq_fuzz::topic`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmq_fuzz::topic(data));
