#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chorus_fuzz::run(
    chorus_tests::fuzz::context_token,
    data
));
