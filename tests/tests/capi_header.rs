//! libmos's headers (`capi/include/mos_api.h`, `mtcp_api.h`) against the compilers and against
//! the Rust definitions:
//!
//! - a translation unit that includes `mos_api.h` and uses every type, constant group and
//!   prototype of the headers compiles warning-free as C (`gcc -std=c99 -Wall -Wextra -pedantic
//!   -Werror`) and as C++ (`g++ -Wall -Wextra -pedantic -Werror`), and links against
//!   `libmos.so` (every declared function is exported);
//! - a C program prints every constant of the headers and the size and field offsets of every
//!   structure, and each is compared with the Rust definitions: `shm_layout::{EventMask, Hook,
//!   Side, TcpState}`, `mos_client::OverlapPolicy` and the constants and `#[repr(C)]` types of
//!   `mos::abi` (crate mos-capi);
//! - the library's soname carries the header's major version.
//!
//! Needs gcc and g++, and `libmos.so` built in the same profile as the tests (`cargo build
//! --release -p mos-capi` for `cargo test --release`).

use anyhow::{bail, ensure, Context, Result};
use mos::abi;
use mos_client::OverlapPolicy;
use mos_tests::locate::{profile_dir, workspace_root};
use mos_tests::procs::{cmd, tail, Proc};
use mos_tests::runner::ScratchDir;
use shm_layout::{EventMask, Hook, Side, TcpState};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a compiler or the printing program may take.
const TIMEOUT: Duration = Duration::from_secs(60);

fn include_dir() -> PathBuf {
    workspace_root().join("capi").join("include")
}

/// `target/<profile>/libmos.so`, which must have been built.
fn libmos() -> Result<PathBuf> {
    let p = profile_dir()?.join("libmos.so");
    ensure!(
        p.is_file(),
        "{} not found: build it with `cargo build -p mos-capi` in the tests' profile \
         (--release for `cargo test --release`)",
        p.display()
    );
    Ok(p)
}

/// Runs `program args...` in `dir` to completion; its stdout, or an error with its output.
fn run(dir: &Path, name: &str, program: &str, args: &[&dyn AsRef<OsStr>]) -> Result<String> {
    let mut p = Proc::spawn(name, cmd(Path::new(program), args), dir)
        .with_context(|| format!("starting {program} (is it installed?)"))?;
    let st = p.wait(TIMEOUT)?;
    ensure!(
        st.success(),
        "{name} ({program}) exited with {st}; stderr:\n{}\nstdout:\n{}",
        tail(&p.stderr()),
        tail(&p.stdout())
    );
    Ok(p.stdout())
}

// ---------------------------------------------------------------------------------------------
// (a) Every type, in C and C++

/// Uses every type and enumeration of the headers, and takes every function's address with
/// the type the headers give it (a mismatch is an error in C++ and a warning, made an error,
/// in C).
const USES_EVERY_TYPE: &str = r#"
#include <mos_api.h>
#include <string.h>

static void cb(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx;
	(void)sock;
	(void)side;
	(void)event;
	(void)arg;
}

static bool flt(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx;
	(void)sock;
	(void)side;
	(void)event;
	(void)arg;
	return true;
}

static void sig(int signum)
{
	(void)signum;
}

int use_every_type(void);
int use_every_type(void)
{
	struct mtcp_context context;
	mctx_t mctx = &context;
	struct mtcp_conf conf;
	enum socket_type st = MOS_SOCK_MONITOR_STREAM;
	enum mtcp_hook_point hk = MOS_HK_SND;
	enum mos_event_type et = MOS_ON_CONN_END;
	enum mos_socket_opts so = MOS_SVROVERLAP;
	enum tcpstate ts = TCP_TIME_WAIT;
	int side = MOS_SIDE_BOTH, overlap = MOS_OVERLAP_POLICY_LAST;
	struct pkt_info pi;
	struct tcp_buf_info bi;
	struct tcp_ring_fragment fr;
	filter_arg_t fa;
	struct filter_arg fa2;
	union monitor_filter mf;
	monitor_filter_t mfp = &mf;
	event_t ev = MOS_ON_PKT_IN;
	callback_t c = cb;
	filter_t f = flt;
	mtcp_sighandler_t sh = sig;
	byte b = 0;
	size_t n = 0;

	int (*p_init)(const char *) = mtcp_init;
	int (*p_destroy)(void) = mtcp_destroy;
	int (*p_getconf)(struct mtcp_conf *) = mtcp_getconf;
	int (*p_setconf)(const struct mtcp_conf *) = mtcp_setconf;
	int (*p_affinitize)(int) = mtcp_core_affinitize;
	mctx_t (*p_create)(int) = mtcp_create_context;
	int (*p_destroy_context)(mctx_t) = mtcp_destroy_context;
	mtcp_sighandler_t (*p_signal)(int, mtcp_sighandler_t) = mtcp_register_signal;
	int (*p_socket)(mctx_t, int, int, int) = mtcp_socket;
	int (*p_close)(mctx_t, int) = mtcp_close;
	int (*p_getsockopt)(mctx_t, int, int, int, void *, socklen_t *) = mtcp_getsockopt;
	int (*p_setsockopt)(mctx_t, int, int, int, const void *, socklen_t) = mtcp_setsockopt;
	int (*p_bind)(mctx_t, int, monitor_filter_t) = mtcp_bind_monitor_filter;
	int (*p_register)(mctx_t, int, event_t, int, callback_t) = mtcp_register_callback;
	event_t (*p_alloc)(event_t) = mtcp_alloc_event;
	event_t (*p_define)(event_t, filter_t, struct filter_arg *) = mtcp_define_event;
	int (*p_raise)(mctx_t, event_t) = mtcp_raise_event;
	int (*p_set_uctx)(mctx_t, int, void *) = mtcp_set_uctx;
	void *(*p_get_uctx)(mctx_t, int) = mtcp_get_uctx;
	ssize_t (*p_peek)(mctx_t, int, int, char *, size_t) = mtcp_peek;
	ssize_t (*p_ppeek)(mctx_t, int, int, char *, size_t, uint64_t) = mtcp_ppeek;
	int (*p_getlastpkt)(mctx_t, int, int, struct pkt_info *) = mtcp_getlastpkt;
	int (*p_settimer)(mctx_t, int, struct timeval *, callback_t) = mtcp_settimer;
	uint32_t (*p_get_ts)(mctx_t) = mtcp_cb_get_ts;
	void (*p_join)(mctx_t) = mtcp_app_join;
	int (*p_getpeername)(mctx_t, int, struct sockaddr *, socklen_t *, int) = mtcp_getpeername;
	int (*p_setlastpkt)(mctx_t, int, int, off_t, byte *, uint16_t, int) = mtcp_setlastpkt;
	int (*p_sendpkt)(mctx_t, int, const struct pkt_info *) = mtcp_sendpkt;

	memset(&context, 0, sizeof context);
	memset(&conf, 0, sizeof conf);
	memset(&pi, 0, sizeof pi);
	memset(&bi, 0, sizeof bi);
	memset(&fr, 0, sizeof fr);
	memset(&fa, 0, sizeof fa);
	memset(&fa2, 0, sizeof fa2);
	memset(&mf, 0, sizeof mf);
	mf.stream_syn_filter = NULL;
	mf.stream_orphan_filter = NULL;
	mf.raw_pkt_filter = NULL;
	conf.num_cores = mctx->cpu;
	conf.app_argv[0][0] = NULL;
	conf.app_argc[0] = conf.num_app;
	conf.app_cpu_mask[0] = conf.cpu_mask;
	pi.ethh = NULL;
	pi.iph = NULL;
	pi.tcph = NULL;
	pi.payload = &b;
	fa.arg = &fa2;
	fa.len = sizeof fa2;
	n += sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr);
	n += (size_t)st + (size_t)et + (size_t)so + (size_t)ts + (size_t)side + (size_t)overlap;
	n += (size_t)(hk == MOS_HK_SND) + (size_t)ev + bi.tcpbi_init_seq + fr.len + (size_t)fa.len;
	n += PKT_INFO_LEN + SOL_MONSOCKET + APP_NAME_LEN + MOS_APP + MOS_APP_ARGC + INPORT_ANY;
	n += MOS_ETH_HDR | MOS_IP_HDR | MOS_TCP_HDR | MOS_TCP_PAYLOAD | MOS_UPDATE_IP_CHKSUM;
	n += MOS_UPDATE_TCP_CHKSUM | MOS_DROP | MOS_OVERWRITE | MOS_CHOMP | MOS_INSERT;
	n += LIBMOS_VERSION_MAJOR + LIBMOS_VERSION_MINOR;
	UNUSED(mfp);
	UNUSED(c);
	UNUSED(f);
	UNUSED(sh);
	n += (p_init != NULL) + (p_destroy != NULL) + (p_getconf != NULL) + (p_setconf != NULL);
	n += (p_affinitize != NULL) + (p_create != NULL) + (p_destroy_context != NULL);
	n += (p_signal != NULL) + (p_socket != NULL) + (p_close != NULL) + (p_getsockopt != NULL);
	n += (p_setsockopt != NULL) + (p_bind != NULL) + (p_register != NULL) + (p_alloc != NULL);
	n += (p_define != NULL) + (p_raise != NULL) + (p_set_uctx != NULL) + (p_get_uctx != NULL);
	n += (p_peek != NULL) + (p_ppeek != NULL) + (p_getlastpkt != NULL) + (p_settimer != NULL);
	n += (p_get_ts != NULL) + (p_join != NULL) + (p_getpeername != NULL);
	n += (p_setlastpkt != NULL) + (p_sendpkt != NULL);
	return (int)(n & 0x7f);
}
"#;

/// Compiles `USES_EVERY_TYPE` as C99 and as C++ with every warning an error, and links it
/// (as C) against libmos.so with a `main`, so that every declared function must be exported.
#[test]
fn the_headers_compile_warning_free_as_c99_and_cxx_and_link() -> Result<()> {
    let work = ScratchDir::new("capi-header-types")?;
    let w = work.path();
    let inc = include_dir();
    let c = w.join("types.c");
    std::fs::write(&c, USES_EVERY_TYPE)?;
    let cxx = w.join("types.cpp");
    std::fs::write(&cxx, USES_EVERY_TYPE)?;
    let obj = w.join("types.o");
    run(
        w,
        "gcc-c99",
        "gcc",
        &[
            &"-std=c99",
            &"-Wall",
            &"-Wextra",
            &"-pedantic",
            &"-Werror",
            &"-I",
            &inc,
            &"-c",
            &c,
            &"-o",
            &obj,
        ],
    )?;
    // Other C dialects a program may be built with.
    for std in ["c11", "gnu99", "gnu17"] {
        let o = w.join(format!("types-{std}.o"));
        run(
            w,
            &format!("gcc-{std}"),
            "gcc",
            &[
                &format!("-std={std}"),
                &"-Wall",
                &"-Wextra",
                &"-pedantic",
                &"-Werror",
                &"-I",
                &inc,
                &"-c",
                &c,
                &"-o",
                &o,
            ],
        )?;
    }
    for std in [None, Some("c++11"), Some("c++17")] {
        let o = w.join(format!("types-cxx-{}.o", std.unwrap_or("default")));
        let mut args: Vec<&dyn AsRef<OsStr>> = Vec::new();
        let flag = std.map(|s| format!("-std={s}"));
        if let Some(f) = &flag {
            args.push(f);
        }
        args.extend_from_slice(&[
            &"-Wall" as &dyn AsRef<OsStr>,
            &"-Wextra",
            &"-pedantic",
            &"-Werror",
            &"-I",
            &inc,
            &"-c",
            &cxx,
            &"-o",
            &o,
        ]);
        run(
            w,
            &format!("g++-{}", std.unwrap_or("default")),
            "g++",
            &args,
        )?;
    }
    // Every function the headers declare is in the library.
    let lib = libmos()?;
    let main = w.join("main.c");
    std::fs::write(
        &main,
        "int use_every_type(void);\nint main(void) { return use_every_type() < 0; }\n",
    )?;
    let exe = w.join("types");
    let libdir = lib.parent().context("libmos.so has no directory")?;
    run(
        w,
        "gcc-link",
        "gcc",
        &[
            &"-std=c99",
            &"-Wall",
            &"-Wextra",
            &"-Werror",
            &main,
            &obj,
            &"-o",
            &exe,
            &"-L",
            &libdir,
            &"-lmos",
            &"-Wl,--no-undefined",
        ],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) Every constant and layout against the Rust definitions

/// Prints `NAME VALUE` for every constant of the headers, `size STRUCT N` and `offset
/// STRUCT.FIELD N` for every structure.
const PRINT_CONSTANTS: &str = r#"
#include <mos_api.h>
#include <stdio.h>

#define P(name) printf("%s %lld\n", #name, (long long)(name))
#define SIZE(tag, type) printf("size %s %lld\n", tag, (long long)sizeof(type))
#define OFF(tag, type, field) \
	printf("offset %s.%s %lld\n", tag, #field, (long long)offsetof(type, field))

int main(void)
{
	P(LIBMOS_VERSION_MAJOR); P(LIBMOS_VERSION_MINOR);
	P(MOS_NULL); P(MOS_HK_RCV); P(MOS_HK_SND);
	P(MOS_NULL_EVENT); P(MOS_ON_PKT_IN); P(MOS_ON_PKT_OUT); P(MOS_ON_CONN_START);
	P(MOS_ON_CONN_SETUP); P(MOS_ON_CONN_NEW_DATA); P(MOS_ON_ERROR); P(MOS_ON_TIMEOUT);
	P(MOS_ON_TCP_STATE_CHANGE); P(MOS_ON_ORPHAN); P(MOS_ON_REXMIT); P(MOS_ON_CONN_END);
	P(MOS_ON_DEBUG_MESSAGE);
	P(MOS_ETH_HDR); P(MOS_IP_HDR); P(MOS_TCP_HDR); P(MOS_TCP_PAYLOAD);
	P(MOS_UPDATE_IP_CHKSUM); P(MOS_UPDATE_TCP_CHKSUM); P(MOS_DROP); P(MOS_OVERWRITE);
	P(MOS_CHOMP); P(MOS_INSERT);
	P(PKT_INFO_LEN);
	P(SOL_MONSOCKET);
	P(MOS_FRAGINFO_CLIBUF); P(MOS_FRAGINFO_SVRBUF); P(MOS_INFO_CLIBUF); P(MOS_INFO_SVRBUF);
	P(MOS_TCP_STATE_CLI); P(MOS_TCP_STATE_SVR); P(MOS_TIMESTAMP); P(MOS_CLIBUF);
	P(MOS_SVRBUF); P(MOS_SEQ_REMAP); P(MOS_STOP_MON); P(MOS_FRAG_CLIBUF); P(MOS_FRAG_SVRBUF);
	P(MOS_CLIOVERLAP); P(MOS_SVROVERLAP);
	P(MOS_LOST_CLIBUF); P(MOS_LOST_SVRBUF);
	P(TCP_CLOSED); P(TCP_LISTEN); P(TCP_SYN_SENT); P(TCP_SYN_RCVD); P(TCP_ESTABLISHED);
	P(TCP_FIN_WAIT_1); P(TCP_FIN_WAIT_2); P(TCP_CLOSE_WAIT); P(TCP_CLOSING); P(TCP_LAST_ACK);
	P(TCP_TIME_WAIT);
	P(MOS_OVERLAP_POLICY_FIRST); P(MOS_OVERLAP_POLICY_LAST); P(MOS_OVERLAP_CNT);
	P(MOS_SIDE_CLI); P(MOS_SIDE_SVR); P(MOS_SIDE_BOTH);
	P(MOS_SOCK_UNUSED); P(MOS_SOCK_STREAM_LISTEN); P(MOS_SOCK_PROXY_LISTEN);
	P(MOS_SOCK_MONITOR_STREAM); P(MOS_SOCK_STREAM); P(MOS_SOCK_PROXY);
	P(MOS_SOCK_MONITOR_STREAM_ACTIVE); P(MOS_SOCK_MONITOR_RAW); P(MOS_SOCK_EPOLL);
	P(MOS_SOCK_PIPE);
	P(APP_NAME_LEN); P(MOS_APP); P(MOS_APP_ARGC); P(INPORT_ANY);

	SIZE("mtcp_context", struct mtcp_context);
	OFF("mtcp_context", struct mtcp_context, cpu);
	SIZE("mtcp_conf", struct mtcp_conf);
	OFF("mtcp_conf", struct mtcp_conf, num_cores);
	OFF("mtcp_conf", struct mtcp_conf, max_concurrency);
	OFF("mtcp_conf", struct mtcp_conf, cpu_mask);
	OFF("mtcp_conf", struct mtcp_conf, max_num_buffers);
	OFF("mtcp_conf", struct mtcp_conf, rcvbuf_size);
	OFF("mtcp_conf", struct mtcp_conf, sndbuf_size);
	OFF("mtcp_conf", struct mtcp_conf, tcp_timewait);
	OFF("mtcp_conf", struct mtcp_conf, tcp_timeout);
	OFF("mtcp_conf", struct mtcp_conf, app_cpu_mask);
	OFF("mtcp_conf", struct mtcp_conf, app_argv);
	OFF("mtcp_conf", struct mtcp_conf, app_argc);
	OFF("mtcp_conf", struct mtcp_conf, num_app);
	SIZE("pkt_info", struct pkt_info);
	OFF("pkt_info", struct pkt_info, cur_ts);
	OFF("pkt_info", struct pkt_info, in_ifidx);
	OFF("pkt_info", struct pkt_info, eth_len);
	OFF("pkt_info", struct pkt_info, ip_len);
	OFF("pkt_info", struct pkt_info, offset);
	OFF("pkt_info", struct pkt_info, payloadlen);
	OFF("pkt_info", struct pkt_info, seq);
	OFF("pkt_info", struct pkt_info, ack_seq);
	OFF("pkt_info", struct pkt_info, window);
	OFF("pkt_info", struct pkt_info, ethh);
	OFF("pkt_info", struct pkt_info, iph);
	OFF("pkt_info", struct pkt_info, tcph);
	OFF("pkt_info", struct pkt_info, payload);
	SIZE("tcp_buf_info", struct tcp_buf_info);
	OFF("tcp_buf_info", struct tcp_buf_info, tcpbi_init_seq);
	OFF("tcp_buf_info", struct tcp_buf_info, tcpbi_last_byte_read);
	OFF("tcp_buf_info", struct tcp_buf_info, tcpbi_next_byte_expected);
	OFF("tcp_buf_info", struct tcp_buf_info, tcpbi_last_byte_received);
	SIZE("tcp_ring_fragment", struct tcp_ring_fragment);
	OFF("tcp_ring_fragment", struct tcp_ring_fragment, offset);
	OFF("tcp_ring_fragment", struct tcp_ring_fragment, len);
	SIZE("filter_arg", struct filter_arg);
	OFF("filter_arg", struct filter_arg, arg);
	OFF("filter_arg", struct filter_arg, len);
	SIZE("monitor_filter", union monitor_filter);
	OFF("monitor_filter", union monitor_filter, raw_pkt_filter);
	OFF("monitor_filter", union monitor_filter, stream_syn_filter);
	OFF("monitor_filter", union monitor_filter, stream_orphan_filter);
	SIZE("event_t", event_t);
	SIZE("callback_t", callback_t);
	SIZE("filter_t", filter_t);
	return 0;
}
"#;

/// What the Rust side says each printed name must be.
fn rust_definitions() -> Vec<(String, i128)> {
    let mut v: Vec<(String, i128)> = Vec::new();
    let mut put = |name: &str, value: i128| v.push((name.to_string(), value));

    // The library's version: the workspace's (mos-capi and this crate share it).
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.').map(|p| p.parse::<i128>().unwrap_or(-1));
    put("LIBMOS_VERSION_MAJOR", parts.next().unwrap_or(-1));
    put("LIBMOS_VERSION_MINOR", parts.next().unwrap_or(-1));

    // Hooks: every Rust hook has its C constant (the match is exhaustive), as mos::abi says.
    for h in [Hook::Null, Hook::Rcv, Hook::Snd] {
        let (name, value) = match h {
            Hook::Null => ("MOS_NULL", abi::MOS_NULL),
            Hook::Rcv => ("MOS_HK_RCV", abi::MOS_HK_RCV),
            Hook::Snd => ("MOS_HK_SND", abi::MOS_HK_SND),
        };
        put(name, value.into());
    }

    // Events: the sensor's bits (shm_layout::EventMask) and mos::abi's.
    put("MOS_NULL_EVENT", abi::MOS_NULL_EVENT.into());
    let events = [
        ("MOS_ON_PKT_IN", abi::MOS_ON_PKT_IN, Some(EventMask::PKT_IN)),
        ("MOS_ON_PKT_OUT", abi::MOS_ON_PKT_OUT, None),
        (
            "MOS_ON_CONN_START",
            abi::MOS_ON_CONN_START,
            Some(EventMask::CONN_START),
        ),
        ("MOS_ON_CONN_SETUP", abi::MOS_ON_CONN_SETUP, None),
        (
            "MOS_ON_CONN_NEW_DATA",
            abi::MOS_ON_CONN_NEW_DATA,
            Some(EventMask::CONN_NEW_DATA),
        ),
        ("MOS_ON_ERROR", abi::MOS_ON_ERROR, Some(EventMask::ERROR)),
        (
            "MOS_ON_TIMEOUT",
            abi::MOS_ON_TIMEOUT,
            Some(EventMask::TIMEOUT),
        ),
        (
            "MOS_ON_TCP_STATE_CHANGE",
            abi::MOS_ON_TCP_STATE_CHANGE,
            Some(EventMask::TCP_STATE_CHANGE),
        ),
        ("MOS_ON_ORPHAN", abi::MOS_ON_ORPHAN, Some(EventMask::ORPHAN)),
        ("MOS_ON_REXMIT", abi::MOS_ON_REXMIT, Some(EventMask::REXMIT)),
        (
            "MOS_ON_CONN_END",
            abi::MOS_ON_CONN_END,
            Some(EventMask::CONN_END),
        ),
        ("MOS_ON_DEBUG_MESSAGE", abi::MOS_ON_DEBUG_MESSAGE, None),
    ];
    let mut sensor_events = 0u64;
    for (name, value, sensor) in events {
        if let Some(m) = sensor {
            // The sensor raises this event with this bit.
            put(name, m.0.into());
            sensor_events |= m.0;
        }
        put(name, value.into());
    }
    // Every event the sensor can raise has its MOS_ON_* constant.
    put(
        "(sensor events without a MOS_ON_ constant)",
        (EventMask::ALL.0 & !sensor_events).into(),
    );

    // Sides.
    put("MOS_SIDE_CLI", (Side::Cli as u8).into());
    put("MOS_SIDE_SVR", (Side::Svr as u8).into());
    put("MOS_SIDE_BOTH", shm_layout::MOS_SIDE_BOTH.into());
    put("MOS_SIDE_CLI", abi::MOS_SIDE_CLI.into());
    put("MOS_SIDE_SVR", abi::MOS_SIDE_SVR.into());
    put("MOS_SIDE_BOTH", abi::MOS_SIDE_BOTH.into());

    // Socket options.
    for (name, value) in [
        ("SOL_MONSOCKET", abi::SOL_MONSOCKET),
        ("MOS_FRAGINFO_CLIBUF", abi::MOS_FRAGINFO_CLIBUF),
        ("MOS_FRAGINFO_SVRBUF", abi::MOS_FRAGINFO_SVRBUF),
        ("MOS_INFO_CLIBUF", abi::MOS_INFO_CLIBUF),
        ("MOS_INFO_SVRBUF", abi::MOS_INFO_SVRBUF),
        ("MOS_TCP_STATE_CLI", abi::MOS_TCP_STATE_CLI),
        ("MOS_TCP_STATE_SVR", abi::MOS_TCP_STATE_SVR),
        ("MOS_TIMESTAMP", abi::MOS_TIMESTAMP),
        ("MOS_CLIBUF", abi::MOS_CLIBUF),
        ("MOS_SVRBUF", abi::MOS_SVRBUF),
        ("MOS_SEQ_REMAP", abi::MOS_SEQ_REMAP),
        ("MOS_STOP_MON", abi::MOS_STOP_MON),
        ("MOS_FRAG_CLIBUF", abi::MOS_FRAG_CLIBUF),
        ("MOS_FRAG_SVRBUF", abi::MOS_FRAG_SVRBUF),
        ("MOS_CLIOVERLAP", abi::MOS_CLIOVERLAP),
        ("MOS_SVROVERLAP", abi::MOS_SVROVERLAP),
        ("MOS_LOST_CLIBUF", abi::MOS_LOST_CLIBUF),
        ("MOS_LOST_SVRBUF", abi::MOS_LOST_SVRBUF),
        ("MOS_OVERLAP_POLICY_FIRST", abi::MOS_OVERLAP_POLICY_FIRST),
        ("MOS_OVERLAP_POLICY_LAST", abi::MOS_OVERLAP_POLICY_LAST),
        ("MOS_OVERLAP_CNT", abi::MOS_OVERLAP_CNT),
        ("MOS_SOCK_MONITOR_STREAM", abi::MOS_SOCK_MONITOR_STREAM),
        ("MOS_SOCK_STREAM", abi::MOS_SOCK_STREAM),
        (
            "MOS_SOCK_MONITOR_STREAM_ACTIVE",
            abi::MOS_SOCK_MONITOR_STREAM_ACTIVE,
        ),
        ("MOS_SOCK_MONITOR_RAW", abi::MOS_SOCK_MONITOR_RAW),
    ] {
        put(name, value.into());
    }
    // The policies the sensor applies, as the client library codes them.
    put(
        "MOS_OVERLAP_POLICY_FIRST",
        OverlapPolicy::FirstCopy.code().into(),
    );
    put(
        "MOS_OVERLAP_POLICY_LAST",
        OverlapPolicy::LastCopy.code().into(),
    );

    // TCP states: every Rust state under its mOS name.
    for s in TcpState::ALL {
        put(s.name(), s.code().into());
    }

    // Sizes of mtcp_conf's arrays.
    put("APP_NAME_LEN", abi::APP_NAME_LEN as i128);
    put("MOS_APP", abi::MOS_APP as i128);
    put("MOS_APP_ARGC", abi::MOS_APP_ARGC as i128);

    // The socket types a monitor never opens, mtcp_setlastpkt's options (refused with
    // ENOTSUP) and INPORT_ANY.
    for (name, value) in [
        ("MOS_SOCK_UNUSED", abi::MOS_SOCK_UNUSED),
        ("MOS_SOCK_STREAM_LISTEN", abi::MOS_SOCK_STREAM_LISTEN),
        ("MOS_SOCK_PROXY_LISTEN", abi::MOS_SOCK_PROXY_LISTEN),
        ("MOS_SOCK_PROXY", abi::MOS_SOCK_PROXY),
        ("MOS_SOCK_EPOLL", abi::MOS_SOCK_EPOLL),
        ("MOS_SOCK_PIPE", abi::MOS_SOCK_PIPE),
        ("MOS_ETH_HDR", abi::MOS_ETH_HDR),
        ("MOS_IP_HDR", abi::MOS_IP_HDR),
        ("MOS_TCP_HDR", abi::MOS_TCP_HDR),
        ("MOS_TCP_PAYLOAD", abi::MOS_TCP_PAYLOAD),
        ("MOS_UPDATE_IP_CHKSUM", abi::MOS_UPDATE_IP_CHKSUM),
        ("MOS_UPDATE_TCP_CHKSUM", abi::MOS_UPDATE_TCP_CHKSUM),
        ("MOS_DROP", abi::MOS_DROP),
        ("MOS_OVERWRITE", abi::MOS_OVERWRITE),
        ("MOS_CHOMP", abi::MOS_CHOMP),
        ("MOS_INSERT", abi::MOS_INSERT),
        ("INPORT_ANY", abi::INPORT_ANY.into()),
    ] {
        put(name, value.into());
    }

    // Layouts: mos::abi's #[repr(C)] types.
    macro_rules! size {
        ($tag:expr, $t:ty) => {
            put(&format!("size {}", $tag), size_of::<$t>() as i128)
        };
    }
    macro_rules! off {
        ($tag:expr, $t:ty, $cfield:ident, $rfield:ident) => {
            put(
                &format!("offset {}.{}", $tag, stringify!($cfield)),
                offset_of!($t, $rfield) as i128,
            )
        };
    }
    size!("mtcp_context", abi::MtcpContext);
    off!("mtcp_context", abi::MtcpContext, cpu, cpu);
    size!("mtcp_conf", abi::MtcpConf);
    off!("mtcp_conf", abi::MtcpConf, num_cores, num_cores);
    off!("mtcp_conf", abi::MtcpConf, max_concurrency, max_concurrency);
    off!("mtcp_conf", abi::MtcpConf, cpu_mask, cpu_mask);
    off!("mtcp_conf", abi::MtcpConf, max_num_buffers, max_num_buffers);
    off!("mtcp_conf", abi::MtcpConf, rcvbuf_size, rcvbuf_size);
    off!("mtcp_conf", abi::MtcpConf, sndbuf_size, sndbuf_size);
    off!("mtcp_conf", abi::MtcpConf, tcp_timewait, tcp_timewait);
    off!("mtcp_conf", abi::MtcpConf, tcp_timeout, tcp_timeout);
    off!("mtcp_conf", abi::MtcpConf, app_cpu_mask, app_cpu_mask);
    off!("mtcp_conf", abi::MtcpConf, app_argv, app_argv);
    off!("mtcp_conf", abi::MtcpConf, app_argc, app_argc);
    off!("mtcp_conf", abi::MtcpConf, num_app, num_app);
    size!("pkt_info", abi::PktInfoC);
    off!("pkt_info", abi::PktInfoC, cur_ts, cur_ts);
    off!("pkt_info", abi::PktInfoC, in_ifidx, in_ifidx);
    off!("pkt_info", abi::PktInfoC, eth_len, eth_len);
    off!("pkt_info", abi::PktInfoC, ip_len, ip_len);
    off!("pkt_info", abi::PktInfoC, offset, offset);
    off!("pkt_info", abi::PktInfoC, payloadlen, payloadlen);
    off!("pkt_info", abi::PktInfoC, seq, seq);
    off!("pkt_info", abi::PktInfoC, ack_seq, ack_seq);
    off!("pkt_info", abi::PktInfoC, window, window);
    off!("pkt_info", abi::PktInfoC, ethh, ethh);
    off!("pkt_info", abi::PktInfoC, iph, iph);
    off!("pkt_info", abi::PktInfoC, tcph, tcph);
    off!("pkt_info", abi::PktInfoC, payload, payload);
    put("PKT_INFO_LEN", offset_of!(abi::PktInfoC, ethh) as i128);
    size!("tcp_buf_info", abi::TcpBufInfoC);
    off!("tcp_buf_info", abi::TcpBufInfoC, tcpbi_init_seq, init_seq);
    off!(
        "tcp_buf_info",
        abi::TcpBufInfoC,
        tcpbi_last_byte_read,
        last_byte_read
    );
    off!(
        "tcp_buf_info",
        abi::TcpBufInfoC,
        tcpbi_next_byte_expected,
        next_byte_expected
    );
    off!(
        "tcp_buf_info",
        abi::TcpBufInfoC,
        tcpbi_last_byte_received,
        last_byte_received
    );
    size!("tcp_ring_fragment", abi::TcpRingFragmentC);
    off!("tcp_ring_fragment", abi::TcpRingFragmentC, offset, offset);
    off!("tcp_ring_fragment", abi::TcpRingFragmentC, len, len);
    size!("filter_arg", abi::FilterArg);
    off!("filter_arg", abi::FilterArg, arg, arg);
    off!("filter_arg", abi::FilterArg, len, len);
    size!("monitor_filter", abi::MonitorFilterC);
    off!("monitor_filter", abi::MonitorFilterC, raw_pkt_filter, first);
    off!(
        "monitor_filter",
        abi::MonitorFilterC,
        stream_syn_filter,
        first
    );
    off!(
        "monitor_filter",
        abi::MonitorFilterC,
        stream_orphan_filter,
        second
    );
    size!("event_t", u64);
    size!("callback_t", abi::CallbackT);
    size!("filter_t", abi::FilterT);
    v
}

/// The printed `NAME VALUE` (or `size X N`, `offset X.F N`) lines, by name.
fn parse_printed(out: &str) -> Result<BTreeMap<String, i128>> {
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("cannot read {line:?}"))?;
        let value: i128 = value
            .parse()
            .with_context(|| format!("cannot read the value of {line:?}"))?;
        if m.insert(name.to_string(), value).is_some() {
            bail!("{name} printed twice");
        }
    }
    Ok(m)
}

#[test]
fn every_constant_and_layout_of_the_headers_matches_the_rust_definitions() -> Result<()> {
    let work = ScratchDir::new("capi-header-constants")?;
    let w = work.path();
    let src = w.join("constants.c");
    std::fs::write(&src, PRINT_CONSTANTS)?;
    let exe = w.join("constants");
    let inc = include_dir();
    run(
        w,
        "gcc",
        "gcc",
        &[
            &"-std=c99",
            &"-Wall",
            &"-Wextra",
            &"-pedantic",
            &"-Werror",
            &"-I",
            &inc,
            &src,
            &"-o",
            &exe,
        ],
    )?;
    let printed = parse_printed(&run(w, "constants", exe.to_str().context("path")?, &[])?)?;
    let want = rust_definitions();

    let mut problems = Vec::new();
    let mut compared = std::collections::BTreeSet::new();
    for (name, value) in &want {
        if name.starts_with('(') {
            // A check on the Rust side alone.
            if *value != 0 {
                problems.push(format!("{name}: {value:#x}"));
            }
            continue;
        }
        match printed.get(name) {
            None => problems.push(format!(
                "{name}: defined in Rust ({value}), not printed by the C program"
            )),
            Some(c) if c != value => problems.push(format!(
                "{name}: the header gives {c} ({c:#x}), Rust {value} ({value:#x})"
            )),
            Some(_) => {
                compared.insert(name.clone());
            }
        }
    }
    for name in printed.keys() {
        if !compared.contains(name) && !want.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "{name}: printed by the C program, no Rust definition to compare with"
            ));
        }
    }
    // The hooks are three distinct values.
    let hooks = [abi::MOS_NULL, abi::MOS_HK_RCV, abi::MOS_HK_SND];
    if hooks[0] == hooks[1] || hooks[1] == hooks[2] || hooks[0] == hooks[2] {
        problems.push(format!("hook values {hooks:?} are not distinct"));
    }
    ensure!(
        problems.is_empty(),
        "{} of {} header values disagree with Rust:\n{}",
        problems.len(),
        printed.len(),
        problems.join("\n")
    );
    println!(
        "{} constants and layouts of the headers match the Rust definitions",
        compared.len()
    );
    Ok(())
}

/// The library's soname is `libmos.so.<LIBMOS_VERSION_MAJOR>`.
#[test]
fn the_library_soname_carries_the_headers_major_version() -> Result<()> {
    let work = ScratchDir::new("capi-header-soname")?;
    let w = work.path();
    let lib = libmos()?;
    let dynamic = run(w, "readelf", "readelf", &[&"-d", &lib])?;
    let soname = dynamic
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .with_context(|| format!("{} has no SONAME:\n{dynamic}", lib.display()))?;
    let header = std::fs::read_to_string(include_dir().join("mos_api.h"))?;
    let major = header
        .lines()
        .find_map(|l| l.strip_prefix("#define LIBMOS_VERSION_MAJOR "))
        .context("mos_api.h defines no LIBMOS_VERSION_MAJOR")?
        .trim();
    let want = format!("[libmos.so.{major}]");
    ensure!(
        soname.contains(&want),
        "the soname line {soname:?} does not name {want}"
    );
    Ok(())
}
