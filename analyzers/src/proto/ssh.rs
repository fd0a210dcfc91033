//! SSH banners and key-exchange fingerprints (being written).
use super::{Dir, Parser, Record};
use serde::Serialize;

/// One SSH connection (being written).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SshRecord {}

/// The SSH parser of one connection (being written).
#[derive(Debug, Default)]
pub struct SshParser {}

impl Parser for SshParser {
    fn data(&mut self, _dir: Dir, _bytes: &[u8], _ts_ns: u64, _out: &mut Vec<Record>) {}
    fn gap(&mut self, _dir: Dir, _len: u64, _ts_ns: u64, _out: &mut Vec<Record>) {}
    fn end(&mut self, _ts_ns: u64, _out: &mut Vec<Record>) {}
    fn done(&self) -> bool {
        true
    }
}
