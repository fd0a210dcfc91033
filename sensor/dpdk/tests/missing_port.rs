//! Asking for a port the EAL did not find gives an error naming it.

mod common;

use mos_dpdk::{DpdkError, Eal, Port, PortOptions};

#[test]
fn missing_port_is_named() {
    let eal = Eal::init(&common::eal_args(&["--vdev=net_null0"])).expect("init");
    assert_eq!(eal.port_count(), 1);
    let err = Port::start(&eal, 5, PortOptions::default()).expect_err("no port 5");
    assert_eq!(
        err,
        DpdkError::NoPort {
            port: 5,
            available: 1
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("no DPDK port 5"), "{msg}");
    assert!(msg.contains("found 1 ports"), "{msg}");
}
