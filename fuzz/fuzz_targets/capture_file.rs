//! Untrusted capture files through the reader from memory, and each frame through the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_sensor::parse::parse_packet;

fuzz_target!(|data: &[u8]| {
    let Ok(mut cap) = FileCapture::from_bytes("fuzz", data.to_vec()) else {
        return;
    };
    loop {
        match cap.next_packet() {
            Ok(Some(p)) => {
                assert!(p.data.len() <= p.orig_len as usize);
                let _ = parse_packet(&p, true);
            }
            Ok(None) => break,
            Err(_) => {
                assert!(matches!(cap.next_packet(), Ok(None)));
                break;
            }
        }
    }
    let (done, total) = cap.progress();
    assert!(Some(done) <= total);
});
