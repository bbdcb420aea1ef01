//! The `/import` decoder, as a gzip body and as a raw one; what it accepts merges and renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meterd::aggregate::GaugeDeltas;
use meterd::forward::import::decode;

fuzz_target!(|body: &[u8]| {
    for gzip in [true, false] {
        if let Ok(import) = decode(body, gzip, meterd_fuzz::MAX_IMPORT_BYTES, meterd_fuzz::NOW) {
            let aggregator = meterd_fuzz::aggregator(GaugeDeltas::Dogstatsd);
            aggregator.merge_series(import.series);
            meterd_fuzz::render_checked(&aggregator, false);
        }
    }
});
