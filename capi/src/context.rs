//! Contexts (`mctx_t`): each is one attachment to the sensor, taking the connections of its
//! share of the sensor's workers, with a thread that runs its callbacks.
//!
//! Calls reach a context in one of two ways:
//! - from one of its callbacks (on its thread): the callback's [`Ctx`] is found through a
//!   thread-local set for the callback's duration ([`with_current`]);
//! - from anywhere else (the program's main thread): through the context's mutex, which its
//!   thread holds while it dispatches; a caller stops the thread's run loop (after the
//!   callback it runs, or within 2 ms of its wait for events), takes the lock, and the loop
//!   goes on once the caller is done.

use crate::abi::{FilterArg, MtcpContext, FIRST_FLOW_SOCK};
use mos_client::{Ctx, Errno, FlowId, Mos, SockId, SocketKind, StopHandle};
use std::cell::{Cell, RefCell};
use std::ffi::c_int;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The most contexts a process has (cpu numbers below this).
pub const MAX_CONTEXTS: usize = 256;

/// How long after its last setup call a context starts without `mtcp_app_join`.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Every context made in this process, by cpu number. A context is never freed (a program
/// may hold its `mctx_t` after `mtcp_destroy_context`, and a signal handler may look one up),
/// so the lookup is a scan of atomics: no lock, safe in a signal handler.
static CONTEXTS: [AtomicPtr<Context>; MAX_CONTEXTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_CONTEXTS];

/// Set by the first `mtcp_app_join`: every context starts dispatching.
pub static STARTED: AtomicBool = AtomicBool::new(false);

/// A context. `public` comes first, so that `mctx_t` (a pointer to `struct mtcp_context`)
/// is a pointer to this.
#[repr(C)]
#[derive(Debug)]
pub struct Context {
    /// What C sees (`mctx->cpu`).
    pub public: MtcpContext,
    /// The attachment and its tables.
    pub inner: Mutex<Inner>,
    /// Callers waiting for `inner`: the thread lets them in before it takes it again.
    pub waiters: AtomicU32,
    /// `mtcp_destroy_context` (or `mtcp_destroy`) asked it to stop.
    pub stop: AtomicBool,
    /// Stops the attachment's run loop (an atomic store: safe in a signal handler).
    pub stop_handle: OnceLock<StopHandle>,
    /// When a setup call last used the context (ns since `EPOCH`).
    pub last_setup: AtomicU64,
    /// Its thread is done (the sensor's input ended, it was destroyed, or the sensor went).
    pub finished: Mutex<bool>,
    /// Signalled when `finished` is set.
    pub finished_cv: Condvar,
    /// Its thread.
    pub thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// It has no worker of the sensor's (more contexts than workers): no attachment, no
    /// thread, no events.
    pub idle: bool,
}

/// What the context's mutex guards.
#[derive(Debug)]
pub struct Inner {
    /// The attachment; `None` for a context that has no worker (more contexts than the
    /// sensor has workers) and once the context finished.
    pub mos: Option<Mos>,
    /// Why there is no attachment, for the errors of calls that need one.
    pub why_none: &'static str,
    /// Sockets and per-flow ids.
    pub tables: Rc<RefCell<Tables>>,
}

// SAFETY: `Inner` is reached only through `Context::inner`'s mutex, and the values in it
// that are not `Send` (the `Rc` of the tables, shared with the closures and per-flow records
// stored inside the `Mos`, and those closures) are created, used and dropped only by whoever
// holds that mutex: the closures run inside `Mos` calls made under the lock, and nothing
// keeps a clone outside it. So the non-atomic reference counts are never touched by two
// threads at once.
unsafe impl Send for Inner {}

/// The sockets of a context and the per-flow socket ids given to callbacks.
#[derive(Debug, Default)]
pub struct Tables {
    /// Monitoring sockets by id: their kind, and whether the program turned their buffers
    /// off (`MOS_CLIBUF`/`MOS_SVRBUF` set to 0, per side).
    pub socks: Vec<Option<SockEntry>>,
    /// Per-flow socket ids (`FIRST_FLOW_SOCK + index`): the monitoring socket and the flow.
    pub flows: Vec<Option<(SockId, FlowId)>>,
    /// Free indices of `flows`.
    pub free: Vec<usize>,
    /// The filter argument of each user-defined event, by bit.
    pub args: Vec<FilterArg>,
    /// `mtcp_getlastpkt`'s copies: client side, server side, raw/orphan.
    pub pkts: [Vec<u8>; 3],
}

/// A monitoring socket.
#[derive(Clone, Copy, Debug)]
pub struct SockEntry {
    /// Stream or raw.
    pub kind: SocketKind,
    /// Buffers turned off by the program, per side.
    pub buf_off: [bool; 2],
}

impl Tables {
    /// A new per-flow id for `sock`'s view of `flow`.
    pub fn alloc(&mut self, sock: SockId, flow: FlowId) -> c_int {
        let i = match self.free.pop() {
            Some(i) => {
                self.flows[i] = Some((sock, flow));
                i
            }
            None => {
                self.flows.push(Some((sock, flow)));
                self.flows.len() - 1
            }
        };
        FIRST_FLOW_SOCK.saturating_add(c_int::try_from(i).unwrap_or(c_int::MAX - FIRST_FLOW_SOCK))
    }

    /// Gives a per-flow id back (its flow ended).
    pub fn release(&mut self, id: c_int) {
        if let Some(i) = id
            .checked_sub(FIRST_FLOW_SOCK)
            .and_then(|i| usize::try_from(i).ok())
        {
            if let Some(e @ Some(_)) = self.flows.get_mut(i) {
                *e = None;
                self.free.push(i);
            }
        }
    }

    /// What a socket id names: `Ok(Flow)` for a per-flow id, `Ok(Monitor)` for an open
    /// monitoring socket, `EBADF` for anything else.
    pub fn lookup(&self, id: c_int) -> Result<Named, Errno> {
        if id < 0 {
            return Err(Errno::EBADF);
        }
        if id < FIRST_FLOW_SOCK {
            return match self.socks.get(id as usize) {
                Some(Some(e)) => Ok(Named::Monitor(SockId(id as u32), *e)),
                _ => Err(Errno::EBADF),
            };
        }
        match self.flows.get((id - FIRST_FLOW_SOCK) as usize) {
            Some(Some((s, f))) => Ok(Named::Flow(*s, *f)),
            _ => Err(Errno::EBADF),
        }
    }

    /// The argument a callback of `event` gets.
    pub fn arg_of(&self, event: u64) -> FilterArg {
        if event.count_ones() == 1 {
            if let Some(a) = self.args.get(event.trailing_zeros() as usize) {
                return *a;
            }
        }
        FilterArg::ZERO
    }
}

/// What a socket id names.
#[derive(Clone, Copy, Debug)]
pub enum Named {
    /// A monitoring socket.
    Monitor(SockId, SockEntry),
    /// A per-flow socket: its monitoring socket and flow.
    Flow(SockId, FlowId),
}

/// What a flow's record on a monitoring socket holds (the client library's per-flow user
/// context): its per-flow id, and the program's `mtcp_set_uctx` pointer. Dropped by the
/// client library when the flow ends (after its last `CONN_END` callback), which gives the
/// id back.
#[derive(Debug)]
pub struct FlowSock {
    /// The per-flow id.
    pub id: c_int,
    /// `mtcp_set_uctx`'s pointer.
    pub user: usize,
    /// Bytes each side's `mtcp_peek` skipped (`MOS_LOST_CLIBUF`, `MOS_LOST_SVRBUF`).
    pub lost: [u64; 2],
    tables: Rc<RefCell<Tables>>,
}

impl Drop for FlowSock {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tables.try_borrow_mut() {
            t.release(self.id);
        }
    }
}

/// The per-flow id of `flow` on `sock`, made on first sight.
pub fn flow_sock(
    ctx: &mut Ctx<'_>,
    tables: &Rc<RefCell<Tables>>,
    sock: SockId,
    flow: FlowId,
) -> c_int {
    if let Some(fs) = ctx.uctx::<FlowSock>(sock, flow) {
        return fs.id;
    }
    let id = tables.borrow_mut().alloc(sock, flow);
    let rec = FlowSock {
        id,
        user: 0,
        lost: [0; 2],
        tables: tables.clone(),
    };
    if ctx.set_uctx(sock, flow, rec).is_err() {
        // The socket closed under the event: the record was dropped, and the id with it.
        return -1;
    }
    id
}

/// The callback being run on this thread: its context, the client library's context for
/// it, and the tables.
#[derive(Clone, Copy)]
pub struct Current {
    /// The context whose callback runs.
    pub mctx: &'static Context,
    /// The callback's `Ctx`.
    pub ctx: *mut Ctx<'static>,
    /// The context's tables.
    pub tables: *const Rc<RefCell<Tables>>,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// Runs `f` (a C callback or filter) with `ctx` reachable by the calls it makes.
pub fn with_current<R>(
    mctx: &'static Context,
    ctx: &mut Ctx<'_>,
    tables: &Rc<RefCell<Tables>>,
    f: impl FnOnce() -> R,
) -> R {
    let cur = Current {
        mctx,
        ctx: (ctx as *mut Ctx<'_>).cast::<Ctx<'static>>(),
        tables,
    };
    let prev = CURRENT.with(|c| c.replace(Some(cur)));
    // Restored even if `f` unwinds (it does not: C frames do not unwind, and the calls it
    // makes catch their panics), so that a stale pointer can never be left behind.
    struct Restore(Option<Current>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0;
            CURRENT.with(|c| c.set(prev));
        }
    }
    let _restore = Restore(prev);
    f()
}

/// The callback running on this thread, if any.
pub fn current() -> Option<Current> {
    CURRENT.with(Cell::get)
}

/// Runs `f` with the callback's context, when `cur` is the callback running on this thread.
pub fn in_callback<R>(cur: Current, f: impl FnOnce(&mut Ctx<'_>, &Rc<RefCell<Tables>>) -> R) -> R {
    // SAFETY: `cur` was set by `with_current` on this thread (thread-local) and is cleared
    // before `with_current` returns, so both pointers come from references that are live
    // for the whole call: `ctx` from the `&mut Ctx` the client library passed the callback,
    // which nothing else uses while the C callback runs (the library waits for it), and
    // `tables` from an `Rc` the callback's closure owns. Calls from C do not nest (a call
    // returns before the program makes the next one, and none of them runs callbacks), so no
    // second `&mut` to the same `Ctx` exists while this one does.
    let (ctx, tables) = unsafe { (&mut *cur.ctx, &*cur.tables) };
    f(ctx, tables)
}

/// The context `mctx` names, if it is one this process made.
pub fn lookup(mctx: *const MtcpContext) -> Option<&'static Context> {
    if mctx.is_null() {
        return None;
    }
    CONTEXTS.iter().find_map(|slot| {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() && std::ptr::eq(p.cast_const().cast::<MtcpContext>(), mctx) {
            // SAFETY: every non-null pointer in CONTEXTS comes from `Box::leak` in
            // `register` and is never freed, so it is valid for the rest of the process.
            Some(unsafe { &*p })
        } else {
            None
        }
    })
}

/// The context of cpu `cpu`, if made.
pub fn by_cpu(cpu: usize) -> Option<&'static Context> {
    let p = CONTEXTS.get(cpu)?.load(Ordering::Acquire);
    // SAFETY: as in `lookup`: leaked, never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Every context made, by cpu.
pub fn all() -> impl Iterator<Item = &'static Context> {
    (0..MAX_CONTEXTS).filter_map(by_cpu)
}

/// Records a new context under its cpu number; `false` if that cpu has one.
pub fn register(ctx: Box<Context>) -> Result<&'static Context, Box<Context>> {
    let cpu = usize::try_from(ctx.public.cpu).unwrap_or(usize::MAX);
    let Some(slot) = CONTEXTS.get(cpu) else {
        return Err(ctx);
    };
    let p = Box::into_raw(ctx);
    match slot.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `p` came from `Box::into_raw` just above and is now owned by the registry,
        // which never frees it.
        Ok(_) => Ok(unsafe { &*p }),
        // SAFETY: the exchange failed, so `p` is still ours alone: take the box back.
        Err(_) => Err(unsafe { Box::from_raw(p) }),
    }
}

/// Forgets every context (`mtcp_destroy`), so that a new `mtcp_init` starts afresh. The
/// contexts themselves stay allocated: a program may still hold their pointers.
pub fn forget_all() {
    // Kept here once forgotten, so that they stay reachable (a leak checker does not report
    // them, and a program's old `mctx_t` still points to a live context).
    static FORGOTTEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let mut kept = FORGOTTEN.lock().unwrap_or_else(|e| e.into_inner());
    for slot in &CONTEXTS {
        let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            kept.push(p as usize);
        }
    }
    STARTED.store(false, Ordering::Release);
}

/// A monotonic clock for `last_setup`.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = *EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Context {
    /// A new context for cpu `cpu`.
    pub fn new(cpu: c_int, mos: Option<Mos>, why_none: &'static str) -> Box<Context> {
        let stop_handle = OnceLock::new();
        if let Some(m) = &mos {
            let _ = stop_handle.set(m.stop_handle());
        }
        let idle = mos.is_none();
        Box::new(Context {
            public: MtcpContext { cpu },
            inner: Mutex::new(Inner {
                mos,
                why_none,
                tables: Rc::new(RefCell::new(Tables::default())),
            }),
            waiters: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            stop_handle,
            last_setup: AtomicU64::new(now_ns()),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            thread: Mutex::new(None),
            idle,
        })
    }

    /// The pointer C gets.
    pub fn as_mctx(&'static self) -> *mut MtcpContext {
        std::ptr::from_ref(&self.public).cast_mut()
    }

    /// Takes the context's mutex: its thread's run loop returns after the callback it runs (or
    /// from its wait for events, within 2 ms), lets this caller in, and goes on.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        if let Some(h) = self.stop_handle.get() {
            h.stop();
        }
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        g
    }

    /// A setup call used the context: its start waits a little longer (without
    /// `mtcp_app_join`).
    pub fn touch(&self) {
        self.last_setup.store(now_ns(), Ordering::Relaxed);
    }

    /// Asks the context to stop: safe in a signal handler (atomic stores only).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.stop_handle.get() {
            h.stop();
        }
    }

    /// Whether its thread is done.
    pub fn is_finished(&self) -> bool {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_finished(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.finished_cv.notify_all();
    }

    /// Waits until its thread is done, or `timeout` passed; whether it is done.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let g = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .finished_cv
            .wait_timeout_while(g, timeout, |f| !*f)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    /// Starts its thread.
    pub fn spawn(&'static self) -> std::io::Result<()> {
        let h = std::thread::Builder::new()
            .name(format!("mos-ctx{}", self.public.cpu))
            .spawn(move || self.run())?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        Ok(())
    }

    /// The thread: waits for the start, then runs the attachment's loop until the input is
    /// done, the context is stopped, or the sensor goes away. A caller that wants the
    /// context's lock stops the loop (`lock`); the thread lets it in and runs the loop again.
    fn run(&'static self) {
        // Start on the first `mtcp_app_join`, or once the program stopped setting this
        // context up.
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let idle = now_ns().saturating_sub(self.last_setup.load(Ordering::Relaxed));
            if STARTED.load(Ordering::Acquire) || idle >= SETTLE.as_nanos() as u64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            while self.waiters.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(mos) = g.mos.as_mut() else { break };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mos.run()));
            match r {
                // A caller wants the lock (or the context was destroyed: looked at above).
                Ok(Ok(mos_client::RunEnd::Stopped | mos_client::RunEnd::Elapsed)) => continue,
                Ok(Ok(mos_client::RunEnd::Done)) => break,
                Ok(Err(e)) => {
                    crate::say(&format!("context {}: {e}", self.public.cpu));
                    break;
                }
                Err(_) => {
                    crate::say(&format!(
                        "context {}: the library failed inside a callback's dispatch (a bug in libmos); the context stops",
                        self.public.cpu
                    ));
                    break;
                }
            }
        }
        // Detach: in lossless mode the sensor then no longer waits for this context.
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.mos.take().is_some() {
                g.why_none = "the context finished (the input ended, it was destroyed, or the sensor went away)";
            }
        }
        self.set_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(slot: u32) -> FlowId {
        FlowId {
            worker: 0,
            slot,
            generation: 1,
        }
    }

    #[test]
    fn per_flow_ids_start_above_the_monitoring_sockets_and_are_reused_once_released() {
        let mut t = Tables {
            socks: vec![Some(SockEntry {
                kind: SocketKind::Stream,
                buf_off: [false; 2],
            })],
            ..Tables::default()
        };
        let a = t.alloc(SockId(0), flow(1));
        let b = t.alloc(SockId(0), flow(2));
        assert_eq!((a, b), (FIRST_FLOW_SOCK, FIRST_FLOW_SOCK + 1));
        assert!(matches!(t.lookup(a), Ok(Named::Flow(SockId(0), f)) if f == flow(1)));
        assert!(matches!(t.lookup(0), Ok(Named::Monitor(SockId(0), _))));
        assert_eq!(t.lookup(1).unwrap_err(), Errno::EBADF);
        assert_eq!(t.lookup(-1).unwrap_err(), Errno::EBADF);
        t.release(a);
        assert_eq!(t.lookup(a).unwrap_err(), Errno::EBADF);
        // Released twice, or an id never given: nothing changes.
        t.release(a);
        t.release(FIRST_FLOW_SOCK + 99);
        assert_eq!(t.alloc(SockId(0), flow(3)), a);
        assert_eq!(t.alloc(SockId(0), flow(4)), FIRST_FLOW_SOCK + 2);
        assert!(matches!(t.lookup(b), Ok(Named::Flow(_, f)) if f == flow(2)));
    }

    #[test]
    fn a_callback_gets_its_events_filter_argument_and_zeros_otherwise() {
        let mut x = 5u8;
        let mut args = vec![FilterArg::ZERO; 13];
        args[12] = FilterArg {
            arg: std::ptr::addr_of_mut!(x).cast(),
            len: 1,
        };
        let t = Tables {
            args,
            ..Tables::default()
        };
        assert_eq!(t.arg_of(1 << 12).len, 1);
        assert!(t.arg_of(1 << 4).arg.is_null());
        assert!(t.arg_of(1 << 40).arg.is_null());
        assert!(t.arg_of((1 << 12) | 1).arg.is_null());
    }
}
