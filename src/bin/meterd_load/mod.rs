//! The parts of `meterd-load` below its command line: what to send ([`workload`]), when
//! ([`pacing`]) and how ([`send`]).

pub mod pacing;
pub mod send;
pub mod workload;
