//! Untrusted operation sequences through the TCP core: the input decodes into tracker settings
//! and a sequence of segments (random flags, sequence numbers near the direction's counter or
//! anywhere, snap-cut payloads), clock ticks and scripted exchanges, then `finish`. After every
//! call the invariants of `sensor/tests/tracker_model.rs` are checked, and a violation panics.
//!
//! The decoder and the checks are that test file's, compiled here without its proptest part
//! (`#[cfg(test)]`), so the fuzzer and the property tests cannot drift apart.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sensor/tests/tracker_model.rs"]
#[allow(dead_code)]
mod tracker_model;

fuzz_target!(|data: &[u8]| {
    tracker_model::run_bytes(data);
});
