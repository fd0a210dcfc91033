//! `--help` would make DPDK 22.11 print its usage and `exit(0)` the process
//! (a test harness would vanish and look green); it is refused before DPDK
//! sees it, and the refusal leaves the way open for a real init.

mod common;

#[test]
fn help_is_refused_before_dpdk() {
    let err = mos_dpdk::Eal::init(&common::eal_args(&["--help"])).expect_err("refused");
    assert!(
        matches!(err, mos_dpdk::DpdkError::BadArgument { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("exit"), "{err}");
    let eal = mos_dpdk::Eal::init(&common::eal_args(&["--vdev=net_null0"]))
        .expect("init after a refused --help");
    assert_eq!(eal.port_count(), 1);
}
