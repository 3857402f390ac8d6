//! libFuzzer entry point of the `headers` harness (see `shmq_fuzz::headers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmq_fuzz::headers(data));
