//! An unknown EAL option gives an Err with a one-line message: no panic, no
//! exit, no abort.

mod common;

#[test]
fn unknown_eal_flag_is_an_error() {
    let err = mos_dpdk::Eal::init(&common::eal_args(&["--no-such-flag"]))
        .expect_err("an unknown option must fail");
    let msg = err.to_string();
    eprintln!("error: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(
        matches!(err, mos_dpdk::DpdkError::EalInit { errno: 22, .. }),
        "EINVAL expected: {err:?}"
    );
    assert!(msg.contains("invalid EAL arguments"), "{msg}");
    // DPDK's own complaint is in the line, not in pages of usage.
    assert!(
        msg.contains("unrecognized option '--no-such-flag'"),
        "{msg}"
    );
}
