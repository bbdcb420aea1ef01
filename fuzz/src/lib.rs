//! Shared set-up for the fuzz targets: an aggregator like benches/aggregate.rs builds, and a
//! render that checks what meterd promises of a flush.

use std::sync::{Arc, LazyLock};

use meterd::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Limits};
use meterd::config::Config;
use meterd::flush::Renderer;

/// Flush timestamp used by every render.
pub const NOW: i64 = 1_763_775_000;

/// The largest decompressed `/import` body the import target accepts.
pub const MAX_IMPORT_BYTES: usize = 1 << 20;

static STANDALONE: LazyLock<Renderer> = LazyLock::new(|| renderer(Vec::new()));
static FORWARDING: LazyLock<Renderer> =
    LazyLock::new(|| renderer(vec!["http://127.0.0.1:8127".to_owned()]));

fn renderer(forward_to: Vec<String>) -> Renderer {
    let mut config = Config::default();
    config.forward.addresses = forward_to;
    Renderer::new(
        config
            .validate("")
            .expect("default config is valid")
            .render_settings(),
    )
}

/// A fresh, empty aggregator with default limits.
pub fn aggregator(gauge_deltas: GaugeDeltas) -> Arc<Aggregator> {
    Arc::new(Aggregator::new(AggregatorConfig {
        shards: 4,
        limits: Limits::default(),
        gauge_deltas,
        hostname: Arc::from("fuzz"),
        gauge_memory_flushes: 360,
    }))
}

/// Swaps and renders (as a local that forwards, or standalone) and checks the result: every
/// point is finite, and every series a local forwards is one a global accepts.
pub fn render_checked(aggregator: &Aggregator, forwarding: bool) {
    let renderer = if forwarding {
        &*FORWARDING
    } else {
        &*STANDALONE
    };
    let meterd::flush::Rendered {
        batch,
        forward,
        spares,
        ..
    } = renderer.render(aggregator.swap(), NOW);
    // As the server does: the next interval reuses the emptied HDR arrays.
    aggregator.recycle(spares);
    for p in &batch.metrics {
        assert!(p.value.is_finite(), "non-finite point rendered: {p:?}");
    }
    for (_hash, s) in &forward {
        if let Err(e) = meterd::forward::decode_series(s) {
            panic!("a global would refuse this forwarded series ({e}): {s:?}");
        }
    }
}
