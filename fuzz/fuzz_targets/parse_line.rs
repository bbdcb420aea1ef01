//! The statsd/DogStatsD line parser never panics on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = meterd::protocol::parse_line(line);
});
