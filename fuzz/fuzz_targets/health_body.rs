//! The `POST /api/v1/healthchecks` body decoder never panics on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = meterd::health::parse_body(body, meterd_fuzz::NOW);
});
