#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lfu_fuzz::spec(data));
