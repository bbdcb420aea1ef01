//! Test support, not tests: what the topic modules use to run meterd and check what it sent.
//! Topic modules `use crate::support::*;` for everything but the real metric stores
//! (`support::servers`) and the plain UDP-in, `http`-sink-out setup (`support::udp_to_http`).

use std::path::{Path, PathBuf};

mod capture;
mod clock;
mod fault_proxy;
mod fleet;
mod meterd;
mod points;
pub mod servers;
pub mod udp_to_http;

pub use capture::*;
pub use clock::*;
pub use fault_proxy::*;
pub use fleet::*;
pub use meterd::*;
pub use points::*;
pub use udp_to_http::run_to_exit;

/// Path of a fixture file.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}
