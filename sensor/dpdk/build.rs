//! Build script: checks for DPDK >= 22.11 with pkg-config, builds the C shim
//! for DPDK's static-inline functions into a shared object linked against
//! libdpdk, and generates bindings that load it at run time.
//!
//! The sensor binary itself does not link DPDK: mapping DPDK's libraries and
//! running their constructors cost every start about 2 ms of CPU, most of a
//! short replay's start-up, although only `--dpdk` uses them. The shared
//! object (`libmos_dpdk_shim.so`, in OUT_DIR) is embedded in the crate and
//! loaded by `Eal::init`; its own dependencies (librte_eal, ethdev, mbuf,
//! mempool) come in with it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_VERSION: &str = "22.11";
const INSTALL_HINT: &str = "install it with `apt-get install libdpdk-dev pkg-config` \
     (Debian 12 ships 22.11), or set PKG_CONFIG_PATH to a DPDK build's pkgconfig directory";

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args(args)
        .output()
        .map_err(|e| format!("could not run pkg-config ({e}); {INSTALL_HINT}"))?;
    if !out.status.success() {
        return Err(format!(
            "`pkg-config {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = match pkg_config(&["--modversion", "libdpdk"]) {
        Ok(v) => v,
        Err(e) => panic!("mos-dpdk: libdpdk was not found by pkg-config: {e}; {INSTALL_HINT}"),
    };
    if pkg_config(&["--atleast-version", MIN_VERSION, "libdpdk"]).is_err() {
        panic!("mos-dpdk: libdpdk {version} is too old, {MIN_VERSION} or newer is needed; {INSTALL_HINT}");
    }
    // Passed unchanged (it carries `-include rte_config.h -march=corei7`, which
    // the pkg-config crate would drop).
    let cflags_line =
        pkg_config(&["--cflags", "libdpdk"]).unwrap_or_else(|e| panic!("mos-dpdk: {e}"));
    let cflags: Vec<String> = cflags_line.split_whitespace().map(str::to_string).collect();
    let libs_line = pkg_config(&["--libs", "libdpdk"]).unwrap_or_else(|e| panic!("mos-dpdk: {e}"));

    // 1. The shim as a shared object. The compiler is the one cc would use;
    //    the four libraries the bindings call into are named with
    //    --no-as-needed so that they are the shim's dependencies whether or not
    //    the shim itself calls them, and every -L directory pkg-config gives
    //    becomes a run path, so a DPDK outside the system's directories is
    //    found at run time too.
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let so = out.join("libmos_dpdk_shim.so");
    let compiler = cc::Build::new().get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args(["-shared", "-fPIC", "-O2", "-g0", "-Wall", "-Wextra"])
        .args(&cflags)
        .arg("-Ishim")
        .arg("shim/shim.c")
        .arg("-o")
        .arg(&so);
    for tok in libs_line.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            cmd.arg(tok);
            cmd.arg(format!("-Wl,-rpath,{dir}"));
        }
    }
    cmd.args([
        "-Wl,--no-as-needed",
        "-lrte_ethdev",
        "-lrte_mbuf",
        "-lrte_mempool",
        "-lrte_eal",
        "-Wl,-soname,libmos_dpdk_shim.so",
    ]);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("mos-dpdk: could not run the C compiler ({e}): {cmd:?}"));
    if !status.success() {
        panic!("mos-dpdk: building the shim failed ({status}): {cmd:?}");
    }

    // 2. Bindings, written to OUT_DIR: the functions become fields of
    //    `DpdkLib`, filled from the loaded shim (every one must be found).
    let bindings = bindgen::Builder::default()
        .header_contents(
            "mos_dpdk_wrapper.h",
            "#include <rte_eal.h>\n#include <rte_errno.h>\n#include <rte_ethdev.h>\n#include <rte_lcore.h>\n\
             #include <rte_mbuf.h>\n#include <rte_mbuf_dyn.h>\n#include <rte_mempool.h>\n\
             #include <rte_version.h>\n#include \"shim.h\"\n",
        )
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_eth_dev_count_avail")
        .allowlist_function("rte_eth_dev_is_valid_port")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_version")
        .allowlist_function("rte_mbuf_dynfield_lookup")
        .allowlist_function("rte_mbuf_dynflag_lookup")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("mos_shim_.*")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_stats")
        .allowlist_var("RTE_MBUF_DYNFIELD_TIMESTAMP_NAME")
        .allowlist_var("RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .dynamic_library_name("DpdkLib")
        .dynamic_link_require_all(true)
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| panic!("mos-dpdk: bindgen failed on the DPDK headers: {e}"));
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write bindings to OUT_DIR");
}
