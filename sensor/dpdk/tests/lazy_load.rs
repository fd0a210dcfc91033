//! DPDK is mapped into the process only when it is first used: a program
//! linking this crate that never starts an EAL carries none of DPDK.

mod common;

use mos_dpdk::Eal;

/// The DPDK libraries mapped into this process, by file name.
fn mapped_dpdk() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.rsplit('/').next())
        .filter(|name| name.starts_with("librte_"))
        .map(String::from)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

#[test]
fn dpdk_is_loaded_by_the_first_use() {
    assert_eq!(
        mapped_dpdk(),
        Vec::<String>::new(),
        "DPDK mapped before any use"
    );
    let version = Eal::version().expect("DPDK loads");
    assert!(version.starts_with("DPDK "), "{version}");
    let libs = mapped_dpdk();
    for want in [
        "librte_eal",
        "librte_ethdev",
        "librte_mbuf",
        "librte_mempool",
    ] {
        assert!(
            libs.iter().any(|l| l.starts_with(want)),
            "{want} not mapped after loading; mapped: {libs:?}"
        );
    }
    // Loading again is free and gives the same answer; the EAL then starts
    // from the loaded libraries.
    assert_eq!(Eal::version().expect("loaded"), version);
    let eal = Eal::init(&common::eal_args(&["--vdev=net_null0"])).expect("init");
    assert_eq!(eal.port_count(), 1);
}
