//! A second `Eal::init` in one process is an error, not undefined behaviour.

mod common;

#[test]
fn second_init_is_an_error() {
    let eal = mos_dpdk::Eal::init(&common::eal_args(&["--vdev=net_null0"])).expect("first init");
    let err = mos_dpdk::Eal::init(&common::eal_args(&["--vdev=net_null0"]))
        .expect_err("second init must fail");
    assert_eq!(err, mos_dpdk::DpdkError::AlreadyInitialised);
    assert!(err.to_string().contains("already initialised"), "{err}");
    // The first EAL still works.
    assert_eq!(eal.port_count(), 1);
    drop(eal);
    // And not even after cleanup: DPDK cannot initialise twice.
    assert!(mos_dpdk::Eal::init(&common::eal_args(&[])).is_err());
}
