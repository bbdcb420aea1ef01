//! One datagram through the splitter, the aggregator and a flush render. The first byte holds
//! flags: bit 0 the datagram was truncated, bit 1 Etsy gauge deltas, bit 2 render as a local
//! that forwards.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meterd::aggregate::{GaugeDeltas, Ingestor};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let gauge_deltas = if flags & 2 != 0 {
        GaugeDeltas::Etsy
    } else {
        GaugeDeltas::Dogstatsd
    };
    let aggregator = meterd_fuzz::aggregator(gauge_deltas);
    let mut ingestor = Ingestor::new(aggregator.clone());
    meterd::ingest::ingest_datagram(&mut ingestor, datagram, flags & 1 != 0);
    ingestor.commit();
    meterd_fuzz::render_checked(&aggregator, flags & 4 != 0);
});
