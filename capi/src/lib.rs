//! libmos: mOS's C monitoring API (`mos_api.h`, `mtcp_api.h` in `capi/include/`) over the mos
//! client library, so that a monitoring program written for mOS compiles against mos and
//! runs as an unprivileged analyzer, unchanged.
//!
//! - `mtcp_init` reads the configuration (the control socket) and asks the sensor for its
//!   settings; `mtcp_getconf`'s `num_cores` is the number of contexts the program runs (the
//!   sensor's workers by default, `mtcp_setconf` changes it).
//! - Each context (`mtcp_create_context(cpu)`) is one attachment taking the connections of
//!   the sensor's workers `w` with `w % num_cores == cpu`, with a thread that runs its
//!   callbacks: each connection belongs to one context, as each flow belongs to one core in
//!   mOS. A context with no worker (more contexts than workers) gets nothing.
//! - Callbacks get per-flow socket ids (from 32 up), as mOS gives them; the calls take them.
//! - Errors are -1 with `errno` as the manual pages say; `mtcp_peek`'s overrun is
//!   `-(bytes lost)` with `ENODATA`. No call aborts or unwinds into C: a failure inside the
//!   library is `EIO`, said once on stderr.
//!
//! `docs/C-API.md` says how to build and run C analyzers, and where mos differs from mOS.

// The entry points are for C programs: their pointer arguments follow the manual pages'
// contracts, which each `SAFETY` comment restates where a pointer is used. Rust code uses
// only the `abi` module.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod abi;
mod conf;
mod context;

use abi::*;
use context::{
    flow_sock, in_callback, with_current, Context, Current, Inner, Named, SockEntry, Tables,
};
use mos_client::{
    AttachOptions, Conf, Ctx, Errno, Error, Event, EventMask, Hook, MonitorFilter, Mos, OptValue,
    OverlapPolicy, Peek, Side, SockId, SockOpt, SocketKind, TimerClock,
};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

type Res<T> = std::result::Result<T, Error>;

/// What `mtcp_init` set up.
#[derive(Debug)]
struct Global {
    control: PathBuf,
    wait: Duration,
    name: String,
    packets: bool,
    clock: TimerClock,
    conf: Conf,
    num_cores: usize,
    /// User-defined events, in the order made: applied to every context, so that each has
    /// them under the same ids.
    udes: Vec<Ude>,
}

#[derive(Clone, Copy, Debug)]
enum UdeKind {
    /// `mtcp_define_event`: base, filter, and the filter argument (pointer and length).
    Define {
        base: u64,
        filter: extern "C" fn(*mut MtcpContext, c_int, c_int, u64, *mut FilterArg) -> bool,
        arg: (usize, usize),
    },
    /// `mtcp_alloc_event`: parent.
    Alloc { parent: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Ude {
    kind: UdeKind,
    id: u64,
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

fn global() -> std::sync::MutexGuard<'static, Option<Global>> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One line on stderr.
pub(crate) fn say(msg: &str) {
    eprintln!("libmos: {msg}");
}

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

fn err(errno: c_int, msg: impl Into<String>) -> Error {
    Error::new(Errno::from_raw(errno), msg)
}

/// Runs a call's body: its result, or `fail` with errno set. `verbose` calls (setting
/// things up) also say why on stderr; calls on the data path (peek, options, packets) only
/// set errno. A panic (a bug in this library) never reaches C: it is `EIO`, said once.
fn guard<R>(name: &str, verbose: bool, fail: R, f: impl FnOnce() -> Res<R>) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if verbose {
                say(&format!("{name}: {e}"));
            }
            set_errno(e.errno().raw());
            fail
        }
        Err(_) => {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                say(&format!(
                    "{name} failed inside the library (a bug in libmos; please report it); calls that fail this way return EIO"
                ));
            }
            set_errno(libc::EIO);
            fail
        }
    }
}

/// The context `mctx` names, and the callback of it running on this thread if any.
fn access(mctx: *mut MtcpContext) -> Res<(&'static Context, Option<Current>)> {
    if let Some(cur) = context::current() {
        if std::ptr::eq(cur.mctx.as_mctx().cast_const(), mctx.cast_const()) {
            return Ok((cur.mctx, Some(cur)));
        }
        if let Some(other) = context::lookup(mctx) {
            return Err(err(
                libc::EPERM,
                format!(
                    "a callback of context {} calls context {}: each context is used from its own callbacks or from outside any callback",
                    cur.mctx.public.cpu, other.public.cpu
                ),
            ));
        }
    }
    match context::lookup(mctx) {
        Some(c) => Ok((c, None)),
        None => Err(err(
            libc::EACCES,
            "mctx is not a context mtcp_create_context made",
        )),
    }
}

/// Runs `f` with a client-library context of `mctx`: the callback's, or one made under the
/// context's lock.
fn with_ctx<R>(
    mctx: *mut MtcpContext,
    f: impl FnOnce(&mut Ctx<'_>, &Rc<RefCell<Tables>>) -> Res<R>,
) -> Res<R> {
    let (c, cur) = access(mctx)?;
    if let Some(cur) = cur {
        return in_callback(cur, f);
    }
    let mut g = c.lock();
    let inner = &mut *g;
    let tables = inner.tables.clone();
    match inner.mos.as_mut() {
        Some(m) => m.with_ctx(|ctx| f(ctx, &tables)),
        None => Err(err(
            libc::EBADF,
            format!(
                "context {} has no connections: {}",
                c.public.cpu, inner.why_none
            ),
        )),
    }
}

/// Runs a setup call `f` on `mctx`'s attachment, under its lock. Not from one of the
/// context's own callbacks (its thread holds the lock while they run): `EPERM`.
fn with_mos<R>(
    mctx: *mut MtcpContext,
    f: impl FnOnce(&'static Context, &mut Inner) -> Res<R>,
) -> Res<R> {
    let (c, cur) = access(mctx)?;
    if cur.is_some() {
        return Err(err(
            libc::EPERM,
            "this call sets a context up and cannot be made from its callbacks (register per-flow callbacks, timers and events from there instead)",
        ));
    }
    c.touch();
    let mut g = c.lock();
    let r = f(c, &mut g);
    c.touch();
    r
}

fn side_of(ev: &Event) -> c_int {
    match ev.side {
        Some(Side::Cli) => MOS_SIDE_CLI,
        Some(Side::Svr) => MOS_SIDE_SVR,
        None => MOS_NULL,
    }
}

/// The `sock` and `side` a callback of `lsock` gets for `ev`: the per-flow id for a
/// connection's event, the monitoring socket and `MOS_NULL` for orphans and raw packets.
fn c_args(
    ctx: &mut Ctx<'_>,
    tables: &Rc<RefCell<Tables>>,
    lsock: SockId,
    ev: &Event,
) -> (c_int, c_int) {
    match ev.flow {
        Some(flow) => (flow_sock(ctx, tables, lsock, flow), side_of(ev)),
        None => (lsock.0 as c_int, MOS_NULL),
    }
}

type CCallback = extern "C" fn(*mut MtcpContext, c_int, c_int, u64, *mut FilterArg);

/// The closure the client library calls for a C callback registered on `lsock` (`flow_id`:
/// the per-flow id, for a registration on one flow).
fn callback_closure(
    ctx: &'static Context,
    tables: Rc<RefCell<Tables>>,
    lsock: SockId,
    flow_id: Option<c_int>,
    cb: CCallback,
) -> impl FnMut(&mut Ctx<'_>, &Event) + 'static {
    move |c: &mut Ctx<'_>, ev: &Event| {
        let (sock, side) = match flow_id {
            Some(id) => (id, side_of(ev)),
            None => c_args(c, &tables, lsock, ev),
        };
        if sock < 0 {
            return;
        }
        let mut arg = tables.borrow().arg_of(ev.id.0);
        with_current(ctx, c, &tables, || {
            cb(ctx.as_mctx(), sock, side, ev.id.0, &mut arg)
        });
    }
}

/// Makes user-defined event `ude` in a context, under the id the program was given.
fn apply_ude(ctx: &'static Context, inner: &mut Inner, ude: &Ude) -> Res<()> {
    let tables = inner.tables.clone();
    let Some(mos) = inner.mos.as_mut() else {
        return Ok(());
    };
    let (got, arg) = match ude.kind {
        UdeKind::Define { base, filter, arg } => {
            let t = tables.clone();
            let id = ude.id;
            let got = mos.define_event(EventMask(base), move |c, ev| {
                let Some(lsock) = c.sock() else { return false };
                let (sock, side) = c_args(c, &t, lsock, ev);
                if sock < 0 {
                    return false;
                }
                let mut a = FilterArg {
                    arg: arg.0 as *mut c_void,
                    len: arg.1,
                };
                with_current(ctx, c, &t, || filter(ctx.as_mctx(), sock, side, id, &mut a))
            })?;
            (
                got,
                FilterArg {
                    arg: arg.0 as *mut c_void,
                    len: arg.1,
                },
            )
        }
        UdeKind::Alloc { parent } => (mos.alloc_event(EventMask(parent))?, FilterArg::ZERO),
    };
    if got.0 != ude.id {
        return Err(err(
            libc::EIO,
            format!(
                "context {} made event {:#x} as {:#x}",
                ctx.public.cpu, ude.id, got.0
            ),
        ));
    }
    let bit = ude.id.trailing_zeros() as usize;
    let mut t = tables.borrow_mut();
    if t.args.len() <= bit {
        t.args.resize(bit + 1, FilterArg::ZERO);
    }
    t.args[bit] = arg;
    Ok(())
}

fn env_flag(name: &str) -> Option<bool> {
    let v = std::env::var(name).ok()?;
    match v.trim() {
        "0" | "no" | "off" | "false" => Some(false),
        "1" | "yes" | "on" | "true" => Some(true),
        other => {
            say(&format!("{name}={other:?} is neither 0 nor 1; taken as 1"));
            Some(true)
        }
    }
}

fn program_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "c-analyzer".into())
}

// ---------------------------------------------------------------------------------------------
// mtcp_api.h

/// `mtcp_init`: reads `config_file` (NULL: none), finds the sensor and asks it for its
/// settings.
#[no_mangle]
pub extern "C" fn mtcp_init(config_file: *const c_char) -> c_int {
    guard("mtcp_init", true, -1, || {
        let mut file = conf::FileConf::default();
        if !config_file.is_null() {
            // SAFETY: C passes a NUL-terminated string (the manual's contract).
            let path = unsafe { CStr::from_ptr(config_file) }
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::os(&e, format_args!("reading {path}")))?;
            file = conf::parse(&text).map_err(|m| err(libc::EINVAL, format!("{path}: {m}")))?;
            if !file.ignored.is_empty() {
                say(&format!(
                    "{path}: ignoring {} (mOS's packet I/O and stack settings: the sensor owns the NIC and its settings here)",
                    file.ignored.join(", ")
                ));
            }
        }
        let control = std::env::var_os("MOS_CONTROL")
            .map(PathBuf::from)
            .or(file.control)
            .unwrap_or_else(|| PathBuf::from(mos_client::DEFAULT_CONTROL));
        let wait = match std::env::var("MOS_ATTACH_WAIT") {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    err(
                        libc::EINVAL,
                        format!("MOS_ATTACH_WAIT={v:?} is not a number of seconds (0 to 86400)"),
                    )
                })?,
            Err(_) => Duration::from_secs(5),
        };
        let clock = match std::env::var("MOS_TIMER_CLOCK").as_deref() {
            Ok("capture") => TimerClock::Capture,
            Ok("wall") | Err(_) => TimerClock::Wall,
            Ok(other) => {
                return Err(err(
                    libc::EINVAL,
                    format!("MOS_TIMER_CLOCK={other:?}: wall or capture"),
                ))
            }
        };
        let packets = env_flag("MOS_PACKETS").unwrap_or(true);
        let name = program_name();
        // One short attachment to learn the sensor's settings (workers, limits).
        let probe = Mos::attach(&AttachOptions {
            control: control.clone(),
            name: format!("{name} (mtcp_init)"),
            wait,
            ..AttachOptions::default()
        })?;
        let conf = probe.getconf();
        drop(probe);
        STREAM_MAX.store(clamp_int(conf.stream_max_bytes), Ordering::Relaxed);
        let mut g = global();
        if g.is_some() {
            return Err(err(
                libc::EINVAL,
                "mtcp_init was called already (mtcp_destroy first)",
            ));
        }
        *g = Some(Global {
            control,
            wait,
            name,
            packets,
            clock,
            num_cores: conf.workers.max(1),
            conf,
            udes: Vec::new(),
        });
        Ok(0)
    })
}

/// `mtcp_destroy`: stops every context, detaches them and forgets the configuration.
#[no_mangle]
pub extern "C" fn mtcp_destroy() -> c_int {
    guard("mtcp_destroy", true, -1, || {
        let ctxs: Vec<_> = context::all().collect();
        for c in &ctxs {
            c.request_stop();
        }
        for c in &ctxs {
            let h = c.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = h {
                if std::thread::current().id() != h.thread().id() {
                    let _ = h.join();
                }
            }
            let mut g = c.lock();
            g.mos = None;
            g.why_none = "mtcp_destroy was called";
        }
        context::forget_all();
        *global() = None;
        Ok(0)
    })
}

fn clamp_int(v: u64) -> c_int {
    c_int::try_from(v).unwrap_or(c_int::MAX)
}

/// `mtcp_getconf`.
#[no_mangle]
pub extern "C" fn mtcp_getconf(conf: *mut MtcpConf) -> c_int {
    guard("mtcp_getconf", false, -1, || {
        if conf.is_null() {
            return Err(err(libc::EINVAL, "conf is NULL"));
        }
        let g = global();
        let g = g
            .as_ref()
            .ok_or_else(|| err(libc::EINVAL, "mtcp_init was not called"))?;
        let c = &g.conf;
        let timeout = c.idle_timeout.as_secs();
        let out = MtcpConf {
            num_cores: clamp_int(g.num_cores as u64),
            max_concurrency: clamp_int(c.max_flows_per_worker),
            cpu_mask: if g.num_cores >= 64 {
                u64::MAX
            } else {
                (1u64 << g.num_cores) - 1
            },
            max_num_buffers: clamp_int(c.buffers_per_worker),
            rcvbuf_size: clamp_int(c.stream_max_bytes),
            sndbuf_size: 0,
            tcp_timewait: 0,
            tcp_timeout: if c.idle_timeout.is_zero() {
                -1
            } else {
                clamp_int(timeout)
            },
            app_cpu_mask: [0; MOS_APP],
            app_argv: [[std::ptr::null_mut(); MOS_APP_ARGC]; MOS_APP],
            app_argc: [0; MOS_APP],
            num_app: 0,
        };
        // SAFETY: C passes a pointer to a `struct mtcp_conf` it owns (checked not NULL).
        unsafe { conf.write(out) };
        Ok(0)
    })
}

/// `mtcp_setconf`: `num_cores` applies (before the first context); the sensor's settings
/// cannot change from here, which is said once.
#[no_mangle]
pub extern "C" fn mtcp_setconf(conf: *const MtcpConf) -> c_int {
    guard("mtcp_setconf", true, -1, || {
        if conf.is_null() {
            return Err(err(libc::EINVAL, "conf is NULL"));
        }
        // SAFETY: C passes a pointer to a `struct mtcp_conf` (checked not NULL); only its
        // plain integer fields are read.
        let (n, maxc, rcv, timeout) = unsafe {
            (
                (*conf).num_cores,
                (*conf).max_concurrency,
                (*conf).rcvbuf_size,
                (*conf).tcp_timeout,
            )
        };
        let mut g = global();
        let g = g
            .as_mut()
            .ok_or_else(|| err(libc::EINVAL, "mtcp_init was not called"))?;
        if n < 1 || n as usize > context::MAX_CONTEXTS {
            return Err(err(
                libc::EINVAL,
                format!("num_cores {n}: from 1 to {}", context::MAX_CONTEXTS),
            ));
        }
        if n as usize != g.num_cores && context::all().next().is_some() {
            return Err(err(
                libc::EINVAL,
                "num_cores changes only before the first mtcp_create_context",
            ));
        }
        g.num_cores = n as usize;
        let c = &g.conf;
        let mut ignored = Vec::new();
        if maxc != clamp_int(c.max_flows_per_worker) {
            ignored.push("max_concurrency");
        }
        if rcv != clamp_int(c.stream_max_bytes) {
            ignored.push("rcvbuf_size");
        }
        let t = if c.idle_timeout.is_zero() {
            -1
        } else {
            clamp_int(c.idle_timeout.as_secs())
        };
        if timeout != t {
            ignored.push("tcp_timeout");
        }
        if !ignored.is_empty() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                say(&format!(
                    "mtcp_setconf: {} are the sensor's settings (mos-sensor's configuration) and stay as they are; num_cores applies",
                    ignored.join(", ")
                ));
            }
        }
        Ok(0)
    })
}

/// `mtcp_core_affinitize`: pins the calling thread to CPU `cpu`.
#[no_mangle]
pub extern "C" fn mtcp_core_affinitize(cpu: c_int) -> c_int {
    guard("mtcp_core_affinitize", true, -1, || {
        let cpu = usize::try_from(cpu)
            .ok()
            .filter(|&c| c < libc::CPU_SETSIZE as usize)
            .ok_or_else(|| err(libc::EINVAL, format!("cpu {cpu} is out of range")))?;
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes bit `cpu` (below
        // CPU_SETSIZE, checked) of it; sched_setaffinity(0, ...) applies to this thread and
        // reads exactly `size_of::<cpu_set_t>()` bytes of the set.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::os(&e, format_args!("pinning to cpu {cpu}")));
        }
        Ok(0)
    })
}

/// `mtcp_create_context`: the context for `cpu` (0 to `num_cores - 1`), attached to the
/// sensor for its share of the workers, with its thread.
#[no_mangle]
pub extern "C" fn mtcp_create_context(cpu: c_int) -> *mut MtcpContext {
    guard("mtcp_create_context", true, std::ptr::null_mut(), || {
        let (opts, workers, udes, n) = {
            let g = global();
            let g = g
                .as_ref()
                .ok_or_else(|| err(libc::EINVAL, "mtcp_init was not called"))?;
            if cpu < 0 || cpu as usize >= g.num_cores {
                return Err(err(
                    libc::EINVAL,
                    format!(
                        "cpu {cpu}: contexts are 0 to {} (mtcp_getconf's num_cores)",
                        g.num_cores - 1
                    ),
                ));
            }
            let opts = AttachOptions {
                control: g.control.clone(),
                name: format!("{}/ctx{cpu}", g.name),
                packets: g.packets,
                wait: g.wait,
                timer_clock: g.clock,
                share: Some((cpu as u32, g.num_cores as u32)),
            };
            (opts, g.conf.workers, g.udes.clone(), g.num_cores)
        };
        if context::by_cpu(cpu as usize).is_some() {
            return Err(err(libc::EEXIST, format!("context {cpu} exists already")));
        }
        let has_workers = (cpu as usize) < workers;
        let mos = if has_workers {
            let mut m = Mos::attach(&opts)?;
            // The client library's first user-defined bit is MOS_ON_DEBUG_MESSAGE's: reserve it.
            let r = m.alloc_event(EventMask::PKT_IN)?;
            if r.0 != MOS_ON_DEBUG_MESSAGE {
                return Err(err(libc::EIO, format!("reserved event {:#x}", r.0)));
            }
            Some(m)
        } else {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                say(&format!(
                    "{n} contexts for the sensor's {workers} workers: contexts {workers} and up get no connections"
                ));
            }
            None
        };
        let why = "it has no worker of the sensor's (more contexts than the sensor has workers)";
        let ctx = context::register(Context::new(cpu, mos, why))
            .map_err(|_| err(libc::EEXIST, format!("context {cpu} exists already")))?;
        {
            let mut g = ctx.lock();
            for u in &udes {
                apply_ude(ctx, &mut g, u)?;
            }
        }
        if !ctx.idle {
            ctx.spawn()
                .map_err(|e| Error::os(&e, "starting the context's thread"))?;
        }
        Ok(ctx.as_mctx())
    })
}

/// `mtcp_destroy_context`: the context stops after the callback it runs (safe in a signal
/// handler); `mtcp_app_join` then returns.
#[no_mangle]
pub extern "C" fn mtcp_destroy_context(mctx: *mut MtcpContext) -> c_int {
    // No allocation and no lock: a signal handler may call this.
    match context::lookup(mctx) {
        Some(c) => {
            c.request_stop();
            0
        }
        None => {
            set_errno(libc::EACCES);
            -1
        }
    }
}

/// `mtcp_register_signal`: installs `handler` for `signum` (with `SA_RESTART`); returns
/// the previous handler, as `signal(2)` and mOS do, or `SIG_ERR` when the signal cannot be
/// caught.
#[no_mangle]
pub extern "C" fn mtcp_register_signal(signum: c_int, handler: SigHandlerT) -> libc::sighandler_t {
    guard("mtcp_register_signal", true, libc::SIG_ERR, || {
        let Some(h) = handler else {
            return Err(err(libc::EINVAL, "the handler is NULL"));
        };
        // SAFETY: zeroed sigactions are valid (empty mask, no flags); the handler is a C
        // function taking the signal number, as sa_handler expects; sigaction copies it and
        // writes the previous action into `old`.
        let (rc, old) = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            let mut old: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = h as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            (libc::sigaction(signum, &sa, &mut old), old)
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::os(
                &e,
                format_args!("installing a handler for signal {signum}"),
            ));
        }
        // As signal(2): the previous handler (SIG_DFL, SIG_IGN or a function).
        Ok(old.sa_sigaction)
    })
}

/// `mtcp_socket`: a monitoring socket (`MOS_SOCK_MONITOR_STREAM` or `MOS_SOCK_MONITOR_RAW`).
#[no_mangle]
pub extern "C" fn mtcp_socket(
    mctx: *mut MtcpContext,
    domain: c_int,
    ty: c_int,
    _protocol: c_int,
) -> c_int {
    guard("mtcp_socket", true, -1, || {
        with_mos(mctx, |c, inner| {
            if domain != libc::AF_INET && domain != libc::AF_INET6 {
                return Err(err(
                    libc::EAFNOSUPPORT,
                    format!("domain {domain}: AF_INET (or AF_INET6)"),
                ));
            }
            let kind = match ty {
                MOS_SOCK_MONITOR_STREAM => SocketKind::Stream,
                MOS_SOCK_MONITOR_RAW => SocketKind::Raw,
                _ => {
                    return Err(err(
                        libc::EINVAL,
                        format!("socket type {ty}: a monitor opens MOS_SOCK_MONITOR_STREAM ({MOS_SOCK_MONITOR_STREAM}) or MOS_SOCK_MONITOR_RAW ({MOS_SOCK_MONITOR_RAW})"),
                    ))
                }
            };
            let id = match inner.mos.as_mut() {
                Some(m) => {
                    let r = match kind {
                        SocketKind::Stream => m.socket(),
                        SocketKind::Raw => m.raw_socket().map_err(|e| {
                            if e.errno() == Errno::EINVAL {
                                err(
                                    libc::EINVAL,
                                    "a raw socket gives packets, which MOS_PACKETS=0 turned off",
                                )
                            } else {
                                e
                            }
                        }),
                    };
                    r.map_err(|e| {
                        if e.errno() == Errno::EMFILE {
                            err(libc::ENFILE, e.message().to_string())
                        } else {
                            e
                        }
                    })?
                }
                None => {
                    // A context without workers: numbered sockets that never see anything.
                    let t = inner.tables.borrow();
                    let n = t
                        .socks
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(t.socks.len());
                    if n >= FIRST_FLOW_SOCK as usize {
                        return Err(err(
                            libc::ENFILE,
                            format!("{FIRST_FLOW_SOCK} sockets are open"),
                        ));
                    }
                    SockId(n as u32)
                }
            };
            let mut t = inner.tables.borrow_mut();
            let i = id.0 as usize;
            if t.socks.len() <= i {
                t.socks.resize(i + 1, None);
            }
            t.socks[i] = Some(SockEntry {
                kind,
                buf_off: [false; 2],
            });
            let _ = c;
            Ok(id.0 as c_int)
        })
    })
}

/// `mtcp_close`: closes a monitoring socket (its callbacks, filters and flows' records go);
/// for a per-flow socket, stops monitoring that flow on it.
#[no_mangle]
pub extern "C" fn mtcp_close(mctx: *mut MtcpContext, sock: c_int) -> c_int {
    guard("mtcp_close", true, -1, || {
        let (c, cur) = access(mctx)?;
        if cur.is_some() {
            // From a callback: only a per-flow socket can be closed.
            return with_ctx(mctx, |ctx, tables| {
                let named = tables.borrow().lookup(sock);
                match named.map_err(|e| err(e.raw(), format!("socket {sock} is not open")))? {
                    Named::Flow(s, f) => ctx.stop_monitoring(s, f, MOS_SIDE_BOTH as u8).map(|_| 0),
                    Named::Monitor(..) => Err(err(
                        libc::EPERM,
                        "a monitoring socket cannot be closed from its context's callbacks",
                    )),
                }
            });
        }
        let named = c.lock().tables.borrow().lookup(sock);
        match named.map_err(|e| err(e.raw(), format!("socket {sock} is not open")))? {
            Named::Flow(..) => with_ctx(mctx, |ctx, tables| {
                let Ok(Named::Flow(s, f)) = tables.borrow().lookup(sock) else {
                    return Err(err(libc::EBADF, format!("socket {sock} is not open")));
                };
                ctx.stop_monitoring(s, f, MOS_SIDE_BOTH as u8).map(|_| 0)
            }),
            Named::Monitor(id, _) => with_mos(mctx, |_, inner| {
                if let Some(m) = inner.mos.as_mut() {
                    m.close(id)?;
                }
                let mut t = inner.tables.borrow_mut();
                if let Some(e) = t.socks.get_mut(id.0 as usize) {
                    *e = None;
                }
                Ok(0)
            }),
        }
    })
}

fn c_str<'a>(p: *const c_char, what: &str) -> Res<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: C passes NUL-terminated strings (checked not NULL), which stay valid during
    // the call that borrows them here.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| err(libc::EINVAL, format!("{what} is not UTF-8 text")))
}

/// `mtcp_bind_monitor_filter`: the socket's libpcap filters, run by the sensor.
#[no_mangle]
pub extern "C" fn mtcp_bind_monitor_filter(
    mctx: *mut MtcpContext,
    sock: c_int,
    ft: *const MonitorFilterC,
) -> c_int {
    guard("mtcp_bind_monitor_filter", true, -1, || {
        with_mos(mctx, |_, inner| {
            let named = inner.tables.borrow().lookup(sock);
            let (id, entry) = match named {
                Ok(Named::Monitor(id, e)) => (id, e),
                Ok(Named::Flow(..)) => {
                    return Err(err(
                        libc::ENOPROTOOPT,
                        format!(
                            "socket {sock} is a per-flow socket; filters go on a monitoring socket"
                        ),
                    ))
                }
                Err(_) => return Err(err(libc::EBADF, format!("socket {sock} is not open"))),
            };
            if ft.is_null() {
                return Ok(0);
            }
            // SAFETY: C passes a pointer to a `union monitor_filter` (checked not NULL): two
            // pointers for a stream socket, the first of them for a raw one; only the one a
            // socket of this kind uses is read (a raw socket's union may hold one pointer).
            let (first, second) = unsafe {
                match entry.kind {
                    SocketKind::Stream => ((*ft).first, (*ft).second),
                    SocketKind::Raw => ((*ft).first, std::ptr::null()),
                }
            };
            let f = match entry.kind {
                SocketKind::Stream => MonitorFilter {
                    stream_syn_filter: c_str(first, "stream_syn_filter")?,
                    stream_orphan_filter: c_str(second, "stream_orphan_filter")?,
                    raw_pkt_filter: None,
                },
                SocketKind::Raw => MonitorFilter {
                    raw_pkt_filter: c_str(first, "raw_pkt_filter")?,
                    ..MonitorFilter::default()
                },
            };
            match inner.mos.as_mut() {
                Some(m) => m.bind_monitor_filter(id, &f).map(|_| 0),
                None => Ok(0),
            }
        })
    })
}

fn hook_of(h: c_int) -> Res<Hook> {
    match h {
        MOS_NULL => Ok(Hook::Null),
        MOS_HK_RCV => Ok(Hook::Rcv),
        MOS_HK_SND => Ok(Hook::Snd),
        _ => Err(err(
            libc::EINVAL,
            format!("hook point {h:#x}: MOS_HK_RCV, MOS_HK_SND or MOS_NULL"),
        )),
    }
}

/// `mtcp_register_callback`: `cb` for `event` at `hook_point` on a monitoring socket (every
/// flow) or a per-flow socket (that flow, from a callback); a NULL `cb` removes it.
#[no_mangle]
pub extern "C" fn mtcp_register_callback(
    mctx: *mut MtcpContext,
    sock: c_int,
    event: u64,
    hook_point: c_int,
    cb: CallbackT,
) -> c_int {
    guard("mtcp_register_callback", true, -1, || {
        let hook = hook_of(hook_point)?;
        // mOS's deprecated events never fire: registering for them does nothing.
        let events = EventMask(event & !NEVER_RAISED);
        if event == 0 {
            return Err(err(libc::EINVAL, "no event to register for"));
        }
        let (c, cur) = access(mctx)?;
        let named = match cur {
            Some(cur) => in_callback(cur, |_, t| t.borrow().lookup(sock)),
            None => c.lock().tables.borrow().lookup(sock),
        }
        .map_err(|_| err(libc::EINVAL, format!("socket {sock} is not open")))?;
        if events.0 == 0 {
            return Ok(0);
        }
        match named {
            Named::Flow(lsock, flow) => with_ctx(mctx, |ctx, tables| {
                match cb {
                    Some(f) => {
                        let clo = callback_closure(c, tables.clone(), lsock, Some(sock), f);
                        ctx.register_flow_callback(lsock, flow, events, hook, clo)?;
                    }
                    None => ctx.unregister_flow_callback(lsock, flow, events, hook)?,
                }
                Ok(0)
            }),
            Named::Monitor(lsock, _) => with_mos(mctx, |c, inner| {
                let tables = inner.tables.clone();
                let Some(m) = inner.mos.as_mut() else {
                    return Ok(0);
                };
                match cb {
                    Some(f) => m.register_callback(
                        lsock,
                        events,
                        hook,
                        callback_closure(c, tables, lsock, None, f),
                    )?,
                    None => {
                        m.unregister_callback(lsock, events, hook)?;
                    }
                }
                Ok(0)
            }),
        }
    })
}

fn is_event(g: &Global, e: u64) -> bool {
    e.count_ones() == 1 && (e & EventMask::ALL.0 != 0 || g.udes.iter().any(|u| u.id == e))
}

fn make_ude(name: &str, kind: UdeKind, base: u64) -> u64 {
    guard(name, true, MOS_NULL_EVENT, || {
        let mut guard_g = global();
        let g = guard_g
            .as_mut()
            .ok_or_else(|| err(libc::EINVAL, "mtcp_init was not called"))?;
        if !is_event(g, base) {
            return Err(err(
                libc::EINVAL,
                format!("{base:#x} is neither a built-in event nor one made by mtcp_define_event or mtcp_alloc_event"),
            ));
        }
        let bit = FIRST_UDE_BIT + g.udes.len() as u32;
        if bit >= 64 {
            return Err(err(
                libc::ENOMEM,
                format!("{} user-defined events exist already", 64 - FIRST_UDE_BIT),
            ));
        }
        if context::current().is_some() {
            return Err(err(libc::EPERM, "events are made outside callbacks"));
        }
        let ude = Ude { kind, id: 1 << bit };
        g.udes.push(ude);
        // Not under the global lock: a context's callbacks may need it (mtcp_getconf) while
        // this waits for the context.
        drop(guard_g);
        for c in context::all() {
            let mut inner = c.lock();
            apply_ude(c, &mut inner, &ude)?;
        }
        Ok(ude.id)
    })
}

/// `mtcp_define_event`: an event that fires when `event` does and `filter` returns true
/// (for every context of the process, under one id).
#[no_mangle]
pub extern "C" fn mtcp_define_event(event: u64, filter: FilterT, arg: *mut FilterArg) -> u64 {
    let Some(filter) = filter else {
        set_errno(libc::EINVAL);
        say("mtcp_define_event: the filter is NULL");
        return MOS_NULL_EVENT;
    };
    let a = if arg.is_null() {
        (0, 0)
    } else {
        // SAFETY: C passes a pointer to a `struct filter_arg` (checked not NULL); it is copied.
        let a = unsafe { *arg };
        (a.arg as usize, a.len)
    };
    make_ude(
        "mtcp_define_event",
        UdeKind::Define {
            base: event,
            filter,
            arg: a,
        },
        event,
    )
}

/// `mtcp_alloc_event`: an event raised by `mtcp_raise_event` while `event` is handled.
#[no_mangle]
pub extern "C" fn mtcp_alloc_event(event: u64) -> u64 {
    make_ude("mtcp_alloc_event", UdeKind::Alloc { parent: event }, event)
}

/// `mtcp_raise_event`: from a filter or callback, raises an event `mtcp_alloc_event` made.
#[no_mangle]
pub extern "C" fn mtcp_raise_event(mctx: *mut MtcpContext, event: u64) -> c_int {
    guard("mtcp_raise_event", false, -1, || {
        let (_, cur) = access(mctx)?;
        let cur = cur.ok_or_else(|| {
            err(
                libc::EINVAL,
                "mtcp_raise_event is called from a filter or callback",
            )
        })?;
        in_callback(cur, |ctx, _| ctx.raise_event(EventMask(event)).map(|_| 0))
    })
}

/// The monitoring socket and flow a per-flow id names; `ENOTSOCK` (or `notsock`) for a
/// monitoring socket, `EBADF` for anything else.
fn flow_of(
    tables: &Rc<RefCell<Tables>>,
    sock: c_int,
    notsock: c_int,
) -> Res<(SockId, mos_client::FlowId)> {
    match tables.borrow().lookup(sock) {
        Ok(Named::Flow(s, f)) => Ok((s, f)),
        Ok(Named::Monitor(..)) => Err(err(
            notsock,
            format!("socket {sock} is a monitoring socket; this call takes the per-flow socket a callback gets"),
        )),
        Err(_) => Err(err(libc::EBADF, format!("socket {sock} is not open (or its connection ended)"))),
    }
}

fn side_arg(side: c_int) -> Res<Side> {
    match side {
        MOS_SIDE_CLI => Ok(Side::Cli),
        MOS_SIDE_SVR => Ok(Side::Svr),
        _ => Err(err(
            libc::EINVAL,
            format!("side {side}: MOS_SIDE_CLI or MOS_SIDE_SVR"),
        )),
    }
}

fn buf_off(tables: &Rc<RefCell<Tables>>, lsock: SockId, side: Side) -> bool {
    tables
        .borrow()
        .socks
        .get(lsock.0 as usize)
        .and_then(|e| e.as_ref())
        .is_some_and(|e| e.buf_off[side.index()])
}

/// `mtcp_set_uctx`.
#[no_mangle]
pub extern "C" fn mtcp_set_uctx(mctx: *mut MtcpContext, sock: c_int, uctx: *mut c_void) -> c_int {
    guard("mtcp_set_uctx", false, -1, || {
        with_ctx(mctx, |ctx, tables| {
            let (s, f) = flow_of(tables, sock, libc::EBADF)?;
            match ctx.uctx::<context::FlowSock>(s, f) {
                Some(fs) => {
                    fs.user = uctx as usize;
                    Ok(0)
                }
                None => Err(err(
                    libc::EBADF,
                    format!("socket {sock}'s connection ended"),
                )),
            }
        })
    })
}

/// `mtcp_get_uctx`: what `mtcp_set_uctx` kept (NULL if nothing).
#[no_mangle]
pub extern "C" fn mtcp_get_uctx(mctx: *mut MtcpContext, sock: c_int) -> *mut c_void {
    guard("mtcp_get_uctx", false, std::ptr::null_mut(), || {
        with_ctx(mctx, |ctx, tables| {
            let (s, f) = flow_of(tables, sock, libc::EBADF)?;
            match ctx.uctx::<context::FlowSock>(s, f) {
                Some(fs) => Ok(fs.user as *mut c_void),
                None => Err(err(
                    libc::EBADF,
                    format!("socket {sock}'s connection ended"),
                )),
            }
        })
    })
}

fn out_buf<'a>(buf: *mut c_char, len: usize) -> Res<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(err(libc::EINVAL, "buf is NULL"));
    }
    let len = len.min(isize::MAX as usize);
    // SAFETY: C passes a buffer of at least `len` writable bytes (the call's contract;
    // checked not NULL), not otherwise used during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// `mtcp_peek`: bytes of `side`'s stream from the read pointer; -1 with `ENODATA` when
/// nothing is new, `-(bytes lost)` with `ENODATA` after an overrun or a gap.
#[no_mangle]
pub extern "C" fn mtcp_peek(
    mctx: *mut MtcpContext,
    sock: c_int,
    side: c_int,
    buf: *mut c_char,
    len: usize,
) -> isize {
    guard("mtcp_peek", false, -1, || {
        with_ctx(mctx, |ctx, tables| {
            let (s, f) = flow_of(tables, sock, libc::ENOTSOCK)?;
            let side = side_arg(side)?;
            if buf_off(tables, s, side) {
                return Err(err(
                    libc::EINVAL,
                    "this side's buffer was turned off (MOS_CLIBUF/MOS_SVRBUF 0)",
                ));
            }
            let out = out_buf(buf, len)?;
            let lost = match ctx.peek(s, f, side, out)? {
                Peek::Data(n) => return Ok(n as isize),
                // The common end of a read loop: errno without building an error.
                Peek::NoData => {
                    set_errno(libc::ENODATA);
                    return Ok(-1);
                }
                Peek::Overrun { lost: n } | Peek::Gap { len: n, .. } => n,
            };
            if let Some(fs) = ctx.uctx::<context::FlowSock>(s, f) {
                fs.lost[side.index()] = fs.lost[side.index()].saturating_add(lost);
            }
            set_errno(libc::ENODATA);
            Ok(-(isize::try_from(lost.max(1)).unwrap_or(isize::MAX)))
        })
    })
}

/// `mtcp_ppeek`: bytes of `side`'s stream from stream offset `off`; the read pointer stays.
#[no_mangle]
pub extern "C" fn mtcp_ppeek(
    mctx: *mut MtcpContext,
    sock: c_int,
    side: c_int,
    buf: *mut c_char,
    count: usize,
    off: u64,
) -> isize {
    guard("mtcp_ppeek", false, -1, || {
        with_ctx(mctx, |ctx, tables| {
            let (s, f) = flow_of(tables, sock, libc::ESOCKTNOSUPPORT)?;
            let side = side_arg(side)?;
            if buf_off(tables, s, side) {
                return Err(err(
                    libc::EINVAL,
                    "this side's buffer was turned off (MOS_CLIBUF/MOS_SVRBUF 0)",
                ));
            }
            let out = out_buf(buf, count)?;
            Ok(ctx.ppeek(s, f, side, out, off)? as isize)
        })
    })
}

/// Writes an option's value `v` (a C `what`) at `optval` and its size in `*optlen`, which
/// must say there is room for it (`EINVAL` otherwise).
fn write_opt<T: Copy>(
    optval: *mut c_void,
    optlen: *mut libc::socklen_t,
    v: T,
    what: &str,
) -> Res<c_int> {
    let size = std::mem::size_of::<T>();
    // SAFETY: C passes `optlen` pointing to a socklen_t (checked by the caller not NULL)...
    let have = unsafe { *optlen } as usize;
    if optval.is_null() || have < size {
        return Err(err(libc::EINVAL, format!("optval must hold {what}")));
    }
    // SAFETY: ...and `optval` to at least `*optlen` bytes (checked: a `T` fits; not NULL).
    unsafe {
        optval.cast::<T>().write_unaligned(v);
        *optlen = size as libc::socklen_t;
    }
    Ok(0)
}

fn write_int(optval: *mut c_void, optlen: *mut libc::socklen_t, v: c_int) -> Res<c_int> {
    write_opt(optval, optlen, v, "an int")
}

/// `mtcp_getsockopt` at `SOL_MONSOCKET`.
#[no_mangle]
pub extern "C" fn mtcp_getsockopt(
    mctx: *mut MtcpContext,
    sock: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut libc::socklen_t,
) -> c_int {
    guard("mtcp_getsockopt", false, -1, || {
        if level != SOL_MONSOCKET {
            return Err(err(
                libc::ENOSYS,
                format!("level {level:#x}: SOL_MONSOCKET"),
            ));
        }
        if optlen.is_null() {
            return Err(err(libc::EINVAL, "optlen is NULL"));
        }
        with_ctx(mctx, |ctx, tables| {
            let named = tables.borrow().lookup(sock).map_err(|_| {
                err(
                    libc::EBADF,
                    format!("socket {sock} is not open (or its connection ended)"),
                )
            })?;
            let opt = match optname {
                MOS_FRAGINFO_CLIBUF => SockOpt::FragInfoCliBuf,
                MOS_FRAGINFO_SVRBUF => SockOpt::FragInfoSvrBuf,
                MOS_INFO_CLIBUF => SockOpt::InfoCliBuf,
                MOS_INFO_SVRBUF => SockOpt::InfoSvrBuf,
                MOS_TCP_STATE_CLI => SockOpt::TcpStateCli,
                MOS_TCP_STATE_SVR => SockOpt::TcpStateSvr,
                MOS_CLIOVERLAP | MOS_SVROVERLAP => {
                    return write_int(optval, optlen, ctx.overlap_policy().code() as c_int)
                }
                MOS_LOST_CLIBUF | MOS_LOST_SVRBUF => {
                    let Named::Flow(s, f) = named else {
                        return Err(err(
                            libc::ENOTSOCK,
                            format!("socket {sock} is a monitoring socket; this option is a connection's"),
                        ));
                    };
                    let i = usize::from(optname == MOS_LOST_SVRBUF);
                    let v = ctx
                        .uctx::<context::FlowSock>(s, f)
                        .map_or(0, |fs| fs.lost[i]);
                    return write_opt(optval, optlen, v, "a uint64_t");
                }
                MOS_CLIBUF | MOS_SVRBUF => {
                    let side = if optname == MOS_CLIBUF {
                        Side::Cli
                    } else {
                        Side::Svr
                    };
                    let lsock = match named {
                        Named::Flow(s, _) | Named::Monitor(s, _) => s,
                    };
                    let v = if buf_off(tables, lsock, side) {
                        0
                    } else {
                        STREAM_MAX.load(Ordering::Relaxed)
                    };
                    return write_int(optval, optlen, v);
                }
                _ => {
                    return Err(err(
                        libc::ENOSYS,
                        format!("option {optname:#x} is not one mos reads"),
                    ))
                }
            };
            let Named::Flow(_, flow) = named else {
                return Err(err(
                    libc::ENOTSOCK,
                    format!("socket {sock} is a monitoring socket; this option is a connection's"),
                ));
            };
            match ctx.getsockopt(flow, opt)? {
                OptValue::State(s) => write_int(optval, optlen, s as c_int),
                OptValue::Overlap(p) => write_int(optval, optlen, p.code() as c_int),
                OptValue::BufInfo(b) => write_opt(
                    optval,
                    optlen,
                    TcpBufInfoC {
                        init_seq: b.init_seq,
                        last_byte_read: b.last_byte_read,
                        next_byte_expected: b.next_byte_expected,
                        last_byte_received: b.last_byte_received,
                    },
                    "a struct tcp_buf_info",
                ),
                OptValue::Fragments(frags) => {
                    // As in mOS: `*optlen` is a number of `struct tcp_ring_fragment`s, in
                    // (room) and out (written).
                    // SAFETY: `optlen` was checked not NULL.
                    let room = unsafe { *optlen } as usize;
                    if room > 0 && optval.is_null() {
                        return Err(err(libc::EINVAL, "optval is NULL"));
                    }
                    let n = frags.len().min(room);
                    for (i, fr) in frags.iter().take(n).enumerate() {
                        let v = TcpRingFragmentC {
                            offset: fr.offset,
                            len: fr.len,
                        };
                        // SAFETY: `optval` holds `room` elements (the contract), i < n <= room.
                        unsafe { optval.cast::<TcpRingFragmentC>().add(i).write_unaligned(v) };
                    }
                    // SAFETY: as above.
                    unsafe { *optlen = n as libc::socklen_t };
                    Ok(0)
                }
            }
        })
    })
}

/// The most bytes one side holds (`rcvbuf_size`), as `mtcp_init` read it: callbacks read it
/// without the global lock.
static STREAM_MAX: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// `mtcp_setsockopt` at `SOL_MONSOCKET`.
#[no_mangle]
pub extern "C" fn mtcp_setsockopt(
    mctx: *mut MtcpContext,
    sock: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: libc::socklen_t,
) -> c_int {
    guard("mtcp_setsockopt", false, -1, || {
        if level != SOL_MONSOCKET {
            return Err(err(
                libc::ENOSYS,
                format!("level {level:#x}: SOL_MONSOCKET"),
            ));
        }
        let int = || -> Res<c_int> {
            if optval.is_null() || (optlen as usize) < std::mem::size_of::<c_int>() {
                return Err(err(
                    libc::EINVAL,
                    "optval must be an int and optlen sizeof(int)",
                ));
            }
            // SAFETY: `optval` points to at least sizeof(int) readable bytes (checked).
            Ok(unsafe { optval.cast::<c_int>().read_unaligned() })
        };
        with_ctx(mctx, |ctx, tables| {
            let named = tables.borrow().lookup(sock).map_err(|_| {
                err(
                    libc::EBADF,
                    format!("socket {sock} is not open (or its connection ended)"),
                )
            })?;
            let lsock = match named {
                Named::Flow(s, _) | Named::Monitor(s, _) => s,
            };
            match optname {
                MOS_CLIBUF | MOS_SVRBUF => {
                    let v = int()?;
                    if v < 0 {
                        return Err(err(libc::EINVAL, format!("buffer size {v}")));
                    }
                    let side = usize::from(optname == MOS_SVRBUF);
                    if let Some(Some(e)) = tables.borrow_mut().socks.get_mut(lsock.0 as usize) {
                        // 0 turns the side's buffer off for this socket (peek gives EINVAL);
                        // any other size is the sensor's to choose, and is accepted as is.
                        e.buf_off[side] = v == 0;
                    }
                    Ok(0)
                }
                MOS_STOP_MON => {
                    let v = int()?;
                    let Named::Flow(s, f) = named else {
                        return Err(err(
                            libc::ENOTSOCK,
                            format!("socket {sock} is a monitoring socket; MOS_STOP_MON takes a per-flow socket"),
                        ));
                    };
                    let side =
                        u8::try_from(v).map_err(|_| err(libc::EINVAL, format!("side {v}")))?;
                    ctx.stop_monitoring(s, f, side).map(|_| 0)
                }
                MOS_CLIOVERLAP | MOS_SVROVERLAP => {
                    let v = int()?;
                    let p = OverlapPolicy::from_code(
                        u64::try_from(v).map_err(|_| err(libc::EINVAL, format!("policy {v}")))?,
                    );
                    ctx.set_overlap_policy(lsock, p).map(|_| 0)
                }
                _ => Err(err(
                    libc::ENOSYS,
                    format!("option {optname:#x} is not one mos sets"),
                )),
            }
        })
    })
}

/// `mtcp_getlastpkt`: a copy of the frame (the event's inside a callback, else the side's
/// last), described in `*p`, its pointers into the context's copy.
#[no_mangle]
pub extern "C" fn mtcp_getlastpkt(
    mctx: *mut MtcpContext,
    sock: c_int,
    side: c_int,
    p: *mut PktInfoC,
) -> c_int {
    guard("mtcp_getlastpkt", false, -1, || {
        if p.is_null() {
            return Err(err(libc::EINVAL, "p is NULL"));
        }
        with_ctx(mctx, |ctx, tables| {
            let named = tables.borrow().lookup(sock).map_err(|_| {
                err(
                    libc::EBADF,
                    format!("socket {sock} is not open (or its connection ended)"),
                )
            })?;
            let (pkt, slot) = match named {
                Named::Flow(_, f) => {
                    let s = side_arg(side)?;
                    (ctx.getlastpkt(f, s)?, s.index())
                }
                // An orphan or a raw socket's packet: the event's frame.
                Named::Monitor(..) => (ctx.event_packet()?, 2),
            };
            let mut t = tables.borrow_mut();
            let buf = &mut t.pkts[slot];
            buf.clear();
            buf.extend_from_slice(&pkt.frame);
            let base = buf.as_mut_ptr();
            let at = |off: u16, ok: bool| -> *mut c_void {
                if ok && usize::from(off) < buf.len().max(1) {
                    // SAFETY: `off` is within the copy (checked), so the pointer stays inside
                    // the allocation.
                    unsafe { base.add(usize::from(off)).cast() }
                } else {
                    std::ptr::null_mut()
                }
            };
            let tcp = pkt.is_tcp() && pkt.tcp_seq().is_some();
            let ip_len = pkt.frame.len().saturating_sub(usize::from(pkt.ip_off));
            let info = PktInfoC {
                cur_ts: (pkt.ts_ns / 1_000_000) as u32,
                in_ifidx: 0,
                eth_len: u16::try_from(pkt.frame.len()).unwrap_or(u16::MAX),
                ip_len: u16::try_from(ip_len).unwrap_or(u16::MAX),
                offset: pkt.offset,
                payloadlen: u16::try_from(pkt.payload_len).unwrap_or(u16::MAX),
                seq: pkt.tcp_seq().unwrap_or(0),
                ack_seq: pkt.tcp_ack().unwrap_or(0),
                window: pkt.tcp_window().unwrap_or(0),
                ethh: at(0, pkt.linktype == 1),
                iph: at(pkt.ip_off, true),
                tcph: at(pkt.tcp_off, tcp),
                payload: at(pkt.payload_off, tcp).cast(),
            };
            // SAFETY: C passes a pointer to a `struct pkt_info` it owns (checked not NULL).
            unsafe { p.write(info) };
            Ok(0)
        })
    })
}

/// Writes `addr` at `out` as a `sockaddr_in` or `sockaddr_in6`; its size.
fn put_addr(out: *mut u8, addr: &std::net::SocketAddr) -> usize {
    match addr {
        std::net::SocketAddr::V4(a) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: the caller checked that `out` has room for a sockaddr_in.
            unsafe { out.cast::<libc::sockaddr_in>().write_unaligned(s) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: the caller checked that `out` has room for a sockaddr_in6.
            unsafe { out.cast::<libc::sockaddr_in6>().write_unaligned(s) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    }
}

/// `mtcp_getpeername`: the client's or server's address, or both (`MOS_SIDE_BOTH`: client
/// first). IPv4 addresses are `struct sockaddr_in` (`sizeof(struct sockaddr)` each, as in
/// mOS); IPv6 ones `struct sockaddr_in6`.
#[no_mangle]
pub extern "C" fn mtcp_getpeername(
    mctx: *mut MtcpContext,
    sock: c_int,
    saddr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    side: c_int,
) -> c_int {
    guard("mtcp_getpeername", false, -1, || {
        if saddr.is_null() || addrlen.is_null() {
            return Err(err(libc::EINVAL, "saddr or addrlen is NULL"));
        }
        with_ctx(mctx, |ctx, tables| {
            let (_, f) = flow_of(tables, sock, libc::ENOTCONN)?;
            let side = u8::try_from(side)
                .ok()
                .filter(|&s| s <= MOS_SIDE_BOTH as u8)
                .ok_or_else(|| err(libc::EINVAL, format!("side {side}")))?;
            let addrs = ctx.getpeername(f, side)?;
            let each = match addrs.first() {
                Some(std::net::SocketAddr::V6(_)) => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => std::mem::size_of::<libc::sockaddr_in>(),
            };
            let need = each * addrs.len();
            // SAFETY: `addrlen` was checked not NULL.
            let have = unsafe { *addrlen };
            // A socklen_t read as a C int is negative above i32::MAX (the page's EINVAL).
            let have = usize::try_from(have as i32)
                .map_err(|_| err(libc::EINVAL, format!("addrlen {} is negative", have as i32)))?;
            if have < need {
                return Err(err(
                    libc::EINVAL,
                    format!("addrlen {have}: {need} bytes are needed"),
                ));
            }
            for (i, a) in addrs.iter().enumerate() {
                // SAFETY: `saddr` has `*addrlen` >= need bytes (checked), so element i fits.
                put_addr(unsafe { saddr.cast::<u8>().add(i * each) }, a);
            }
            // SAFETY: as above.
            unsafe { *addrlen = need as libc::socklen_t };
            Ok(0)
        })
    })
}

/// `mtcp_settimer`: `cb(mctx, id, 0, MOS_ON_TIMEOUT, arg)` once, `timeout` from now.
#[no_mangle]
pub extern "C" fn mtcp_settimer(
    mctx: *mut MtcpContext,
    id: c_int,
    timeout: *const libc::timeval,
    cb: CallbackT,
) -> c_int {
    guard("mtcp_settimer", true, -1, || {
        let Some(cb) = cb else {
            return Err(err(libc::EINVAL, "the callback is NULL"));
        };
        if timeout.is_null() {
            return Err(err(libc::EINVAL, "timeout is NULL"));
        }
        // SAFETY: C passes a pointer to a `struct timeval` (checked not NULL).
        let tv = unsafe { *timeout };
        if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
            return Err(err(
                libc::EINVAL,
                format!("timeout {} s {} us", tv.tv_sec, tv.tv_usec),
            ));
        }
        let after =
            Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
        let (c, cur) = access(mctx)?;
        let timer = move |tables: Rc<RefCell<Tables>>| {
            move |ctx: &mut Ctx<'_>, id: i32| {
                let mut a = FilterArg::ZERO;
                with_current(c, ctx, &tables, || {
                    cb(c.as_mctx(), id, 0, MOS_ON_TIMEOUT, &mut a)
                });
            }
        };
        match cur {
            Some(cur) => in_callback(cur, |ctx, tables| {
                ctx.settimer(id, after, timer(tables.clone()));
                Ok(0)
            }),
            None => with_mos(mctx, |_, inner| {
                let tables = inner.tables.clone();
                if let Some(m) = inner.mos.as_mut() {
                    m.settimer(id, after, timer(tables));
                }
                Ok(0)
            }),
        }
    })
}

/// `mtcp_cb_get_ts`: the timer clock now, in microseconds (wraps).
#[no_mangle]
pub extern "C" fn mtcp_cb_get_ts(mctx: *mut MtcpContext) -> u32 {
    guard("mtcp_cb_get_ts", false, 0, || {
        with_ctx(mctx, |ctx, _| Ok((ctx.timer_now_ns() / 1000) as u32))
    })
}

/// `mtcp_app_join`: starts every context (the first call), then waits until this one is done:
/// the sensor's input ended and every event was dispatched, it was destroyed, or the sensor
/// went away. A context without workers waits for the others.
#[no_mangle]
pub extern "C" fn mtcp_app_join(mctx: *mut MtcpContext) {
    guard("mtcp_app_join", true, (), || {
        let (c, cur) = access(mctx)?;
        if cur.is_some() {
            return Err(err(
                libc::EPERM,
                "mtcp_app_join is called outside callbacks",
            ));
        }
        context::STARTED.store(true, Ordering::Release);
        loop {
            if c.idle {
                let others_done = context::all().filter(|o| !o.idle).all(Context::is_finished);
                if others_done || c.stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            } else if c.wait_finished(Duration::from_millis(200)) {
                break;
            }
        }
        let h = c.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
        Ok(())
    })
}

/// `mtcp_setlastpkt`: mos is a passive monitor: -1 with `ENOTSUP`.
#[no_mangle]
pub extern "C" fn mtcp_setlastpkt(
    _mctx: *mut MtcpContext,
    _sock: c_int,
    _side: c_int,
    _offset: libc::off_t,
    _data: *mut u8,
    _datalen: u16,
    _option: c_int,
) -> c_int {
    set_errno(libc::ENOTSUP);
    -1
}

/// `mtcp_sendpkt`: mos is a passive monitor: -1 with `ENOTSUP`.
#[no_mangle]
pub extern "C" fn mtcp_sendpkt(
    _mctx: *mut MtcpContext,
    _sock: c_int,
    _pkt: *const PktInfoC,
) -> c_int {
    set_errno(libc::ENOTSUP);
    -1
}
