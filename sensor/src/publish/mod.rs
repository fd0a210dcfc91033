//! Publication: what the sensor shares with analyzers.
//!
//! - [`region`] creates the shared regions;
//! - [`slots`] writes each connection's state into its flow slot (called by the tracker);
//! - [`fanout`] turns the tracker's events into records in each attached analyzer's event
//!   ring, keeps the packet log, and in lossless mode waits for analyzers before anything
//!   they may still read is reused.

pub mod fanout;
pub mod region;
pub mod slots;

pub use fanout::{Attached, Fanout, FanoutOptions, PublishSink, ToControl, ToWorker};
pub use region::{
    create_analyzer, create_main, AnalyzerFds, AnalyzerRegions, HugePages, MainRegion,
};
pub use slots::SlotPublisher;
