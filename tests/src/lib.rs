//! Test support for mos: the conformance corpus runner (run `mos-sensor --dump` on the
//! shared captures and compare its reassembled streams with the reference truth) and a
//! synthetic capture generator whose streams are known exactly.

pub mod addr;
pub mod audit;
pub mod bench;
pub mod debroot;
pub mod disagreements;
pub mod dumps;
pub mod flows;
pub mod frames;
pub mod known;
pub mod locate;
pub mod matcher;
pub mod netns;
pub mod nspawn;
pub mod pcap;
pub mod procs;
pub mod runner;
pub mod sniff;
pub mod synth;
pub mod tcpdump;
pub mod truth;
pub mod tshark;
