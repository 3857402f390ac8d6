//! libFuzzer entry point of the `dlq_envelope` harness (see `shmq_fuzz::dlq_envelope`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmq_fuzz::dlq_envelope(data));
