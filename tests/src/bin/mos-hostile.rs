//! `mos-hostile`: an analyzer that attacks the sensor, for `tests/tests/hostile.rs`.
//!
//! It speaks the control protocol itself (no `mos-client`), so that it can do what the library
//! never would: resize its page, scribble over its consumer indices, flood the socket with
//! malformed or oversized messages, hold idle connections, and name itself with escape
//! sequences. Each mode prints `key=value` lines on stdout as it goes (`active` once it is
//! doing its worst, so the test can look at the sensor meanwhile) and ends with an `end` line
//! saying how the sensor treated it. It exits 0 whatever the sensor did to it; only a broken
//! test set-up (no socket, no welcome) is an error, one line on stderr and status 1.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use shm_layout::control::{
    encode, ClientMsg, LinkProgram, SensorMsg, SocketKind, SocketSub, Subscription, MAX_MESSAGE,
};
use shm_layout::layout::{AnalyzerPage, EventRingHeader, ABI_MAJOR, ABI_MINOR};
use shm_layout::plan::EventPlan;
use shm_layout::region::Mapping;
use std::io::{IoSlice, IoSliceMut, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "mos-hostile")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,
    /// Give up after this many seconds, whatever happened.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    limit: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Attaches, truncates and grows its page, tries to reopen the read-only regions for
    /// writing and resize them, then consumes every event as a good analyzer would.
    Resize,
    /// Attaches and moves its consumer indices back and forth between two values without
    /// consuming anything.
    Oscillate,
    /// Attaches and writes random consumer indices, some far behind, some far ahead.
    Random,
    /// Attaches and claims events far in the future (indices past what was published).
    Future,
    /// Attaches and subscribes and unsubscribes in a loop, as fast as it can.
    Subscribe,
    /// Sends malformed, oversized and out-of-order control messages on many connections.
    Malformed,
    /// Attaches and sends subscriptions with filter programs the sensor must refuse, one
    /// with long valid programs on raw and stream sockets, changes its filters a few hundred
    /// times a second and stops flows that do not exist, consuming every event meanwhile.
    Filters,
    /// Opens COUNT connections that never say hello, and holds them.
    Idle {
        /// Connections to open.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Hold them this many seconds.
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// Attaches under NAME (escape sequences included) and consumes every event.
    Named {
        /// The name to attach under.
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mos-hostile: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn connect(path: &Path, nonblocking: bool) -> rustix::io::Result<OwnedFd> {
    let flags = if nonblocking {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::connect(&fd, &addr)?;
    Ok(fd)
}

fn send_raw(fd: &OwnedFd, bytes: &[u8]) -> bool {
    let mut anc = SendAncillaryBuffer::default();
    rustix::net::sendmsg(
        fd,
        &[IoSlice::new(bytes)],
        &mut anc,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )
    .is_ok()
}

fn send(fd: &OwnedFd, msg: &ClientMsg) -> bool {
    send_raw(fd, &encode(msg))
}

/// What came from the sensor.
enum Got {
    Msg(SensorMsg, Vec<OwnedFd>),
    Nothing,
    Closed,
}

fn recv(fd: &OwnedFd, wait: Duration) -> Got {
    let ts = rustix::time::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut p = [PollFd::new(fd, PollFlags::IN)];
    if !matches!(rustix::event::poll(&mut p, Some(&ts)), Ok(n) if n > 0) {
        return Got::Nothing;
    }
    let mut buf = vec![0u8; shm_layout::control::MAX_STATUS_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let got = match rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(g) => g,
        Err(rustix::io::Errno::AGAIN) => return Got::Nothing,
        Err(_) => return Got::Closed,
    };
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if got.bytes == 0 {
        return Got::Closed;
    }
    match shm_layout::control::decode_limited::<SensorMsg>(
        &buf[..got.bytes],
        shm_layout::control::MAX_STATUS_MESSAGE,
    ) {
        Ok(m) => Got::Msg(m, fds),
        Err(_) => Got::Closed,
    }
}

/// An attached analyzer's view: its socket, its page (writable) and its event rings.
struct Attached {
    sock: OwnedFd,
    fds: Vec<OwnedFd>,
    page: Mapping,
    events: Mapping,
    plan: EventPlan,
    nworkers: usize,
}

impl Attached {
    fn page(&self) -> &AnalyzerPage {
        self.page.get::<AnalyzerPage>(0).expect("checked at attach")
    }

    fn producer(&self, w: usize) -> u64 {
        self.events
            .get::<EventRingHeader>(self.plan.ring_off(w) as usize)
            .map_or(0, |h| h.producer.load(Ordering::Acquire))
    }

    fn set_consumer(&self, w: usize, v: u64) {
        self.page().consumer[w].index.store(v, Ordering::Release);
    }

    /// Consumes everything published so far, as a good analyzer would.
    fn consume_all(&self) {
        for w in 0..self.nworkers {
            self.set_consumer(w, self.producer(w));
        }
    }

    /// How the sensor ended with it, if it did: `Some("detached: why")`, `Some("done")`,
    /// `Some("closed")`; `None` while it goes on.
    fn verdict(&self) -> Option<String> {
        loop {
            match recv(&self.sock, Duration::ZERO) {
                Got::Msg(SensorMsg::Detached { reason }, _) => {
                    return Some(format!("detached: {reason}"))
                }
                Got::Msg(SensorMsg::Done, _) => return Some("done".into()),
                Got::Msg(_, _) => continue,
                Got::Nothing => return None,
                Got::Closed => return Some("closed".into()),
            }
        }
    }
}

fn attach(path: &Path, name: &str) -> Result<Attached> {
    let sock = connect(path, false).with_context(|| format!("connecting to {}", path.display()))?;
    send(
        &sock,
        &ClientMsg::Hello {
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            name: name.into(),
        },
    );
    let (msg, fds) = match recv(&sock, Duration::from_secs(10)) {
        Got::Msg(m, fds) => (m, fds),
        Got::Nothing => bail!("no answer to hello within 10 s"),
        Got::Closed => bail!("the sensor closed the socket at hello"),
    };
    let SensorMsg::Welcome {
        events_len,
        event_capacity,
        nworkers,
        page_len,
        ..
    } = msg
    else {
        bail!("refused at hello: {msg:?}");
    };
    if fds.len() != 3 {
        bail!("the welcome came with {} descriptors", fds.len());
    }
    let page = Mapping::map(fds[2].as_fd(), page_len as usize, true, false)?;
    let events = Mapping::map(fds[1].as_fd(), events_len as usize, false, false)?;
    if page.get::<AnalyzerPage>(0).is_none() {
        bail!("the page is too small");
    }
    let plan =
        EventPlan::new(event_capacity, nworkers as usize).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(Attached {
        sock,
        fds,
        page,
        events,
        plan,
        nworkers: nworkers as usize,
    })
}

/// Subscribes to every built-in event (and packets) and says it is ready.
fn subscribe_all(a: &Attached) {
    send(
        &a.sock,
        &ClientMsg::Subscribe(Subscription {
            events: (1 << 11) - 1,
            packets: true,
        }),
    );
    send(&a.sock, &ClientMsg::Ready);
}

/// `ok`, or the attempt's errno as `errnoN`.
fn outcome<T>(r: rustix::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno{}", e.raw_os_error()),
    }
}

/// Runs `step` every `every` until the sensor ends with the analyzer or the limit is reached;
/// prints `active` first and `end verdict=...` last.
fn until_verdict(a: &Attached, limit: Instant, every: Duration, mut step: impl FnMut(u64)) {
    say("active");
    let mut i = 0u64;
    let verdict = loop {
        if let Some(v) = a.verdict() {
            break v;
        }
        if Instant::now() >= limit {
            break "limit".into();
        }
        step(i);
        i += 1;
        std::thread::sleep(every);
    };
    say(&format!("end verdict={verdict}"));
}

/// A small deterministic generator, so that a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(args: &Args) -> Result<()> {
    let limit = Instant::now() + Duration::from_secs(args.limit);
    let path = &args.control;
    match &args.mode {
        Mode::Resize => {
            let a = attach(path, "hostile-resize")?;
            // Before `Ready`: the sensor's next look at the page is during the replay. Grown,
            // then cut to nothing: a sensor that let it would die at that look.
            let page_fd = &a.fds[2];
            let grow = outcome(rustix::fs::ftruncate(page_fd, 1 << 20));
            let shrink = outcome(rustix::fs::ftruncate(page_fd, 0));
            say(&format!("resize page_shrink={shrink} page_grow={grow}"));
            // The read-only regions, reopened through /proc for writing.
            for (name, fd) in [("main", &a.fds[0]), ("events", &a.fds[1])] {
                let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let reopened = rustix::fs::open(
                    p.as_str(),
                    rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                );
                let (shrink, grow) = match &reopened {
                    Ok(rw) => (
                        outcome(rustix::fs::ftruncate(rw, 0)),
                        outcome(rustix::fs::ftruncate(rw, 1 << 40)),
                    ),
                    Err(_) => ("-".into(), "-".into()),
                };
                say(&format!(
                    "resize region={name} reopen_rw={} shrink={shrink} grow={grow}",
                    outcome(reopened)
                ));
            }
            subscribe_all(&a);
            // Its own page, if it could cut it, is gone for it too.
            let intact = shrink != "ok";
            until_verdict(&a, limit, Duration::from_micros(200), |_| {
                if intact {
                    a.consume_all();
                }
            });
        }
        Mode::Oscillate => {
            let a = attach(path, "hostile-oscillate")?;
            subscribe_all(&a);
            until_verdict(&a, limit, Duration::from_millis(1), |i| {
                for w in 0..a.nworkers {
                    a.set_consumer(w, i % 2);
                }
            });
        }
        Mode::Random => {
            let a = attach(path, "hostile-random")?;
            subscribe_all(&a);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            until_verdict(&a, limit, Duration::from_micros(100), |_| {
                for w in 0..a.nworkers {
                    let r = rng.next();
                    let p = a.producer(w);
                    let v = match r % 4 {
                        0 => r,
                        1 => p.wrapping_add(r % 64),
                        2 => p.saturating_sub(r % 100_000),
                        _ => u64::MAX - r % 16,
                    };
                    a.set_consumer(w, v);
                    let page = a.page();
                    page.heartbeat_ns.store(rng.next(), Ordering::Relaxed);
                    page.pid.store(rng.next(), Ordering::Relaxed);
                    page.waiting.store(rng.next() % 3, Ordering::Relaxed);
                }
            });
        }
        Mode::Future => {
            let a = attach(path, "hostile-future")?;
            subscribe_all(&a);
            until_verdict(&a, limit, Duration::from_micros(200), |i| {
                for w in 0..a.nworkers {
                    let v = if i % 2 == 0 {
                        u64::MAX
                    } else {
                        a.producer(w).wrapping_add(1 << 40)
                    };
                    a.set_consumer(w, v);
                }
            });
        }
        Mode::Subscribe => {
            let a = attach(path, "hostile-subscribe")?;
            subscribe_all(&a);
            say("active");
            let mut sent = 0u64;
            let verdict = loop {
                if let Some(v) = a.verdict() {
                    break v;
                }
                if Instant::now() >= limit {
                    break "limit".into();
                }
                for k in 0..64u64 {
                    let events = if k % 2 == 0 { (1 << 11) - 1 } else { 0 };
                    if send(
                        &a.sock,
                        &ClientMsg::Subscribe(Subscription {
                            events,
                            packets: k % 4 == 0,
                        }),
                    ) {
                        sent += 1;
                    }
                }
                // Keep consuming, so that only the flood can get it detached.
                a.consume_all();
            };
            say(&format!("end sent={sent} verdict={verdict}"));
        }
        Mode::Malformed => malformed(path, limit)?,
        Mode::Filters => filters(path, limit)?,
        Mode::Idle { count, hold } => idle(path, *count, Duration::from_secs(*hold), limit)?,
        Mode::Named { name } => {
            let a = attach(path, name)?;
            subscribe_all(&a);
            until_verdict(&a, limit, Duration::from_micros(200), |_| a.consume_all());
        }
    }
    Ok(())
}

/// Messages no analyzer sends, each on a connection of its own, then a valid hello followed
/// by garbage.
fn malformed(path: &Path, limit: Instant) -> Result<()> {
    let hello = encode(&ClientMsg::Hello {
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        name: "hostile-malformed".into(),
    });
    let mut huge_string = hello.clone();
    // The name's length prefix (after the variant's 4 bytes and the two versions' 4), made
    // enormous: a decoder that believed it would allocate exabytes.
    huge_string[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut rng = Rng(42);
    let random: Vec<u8> = (0..300).map(|_| rng.next() as u8).collect();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("empty", vec![Vec::new()]),
        ("one-byte", vec![vec![0xff]]),
        ("random", vec![random]),
        ("unknown-variant", vec![99u32.to_le_bytes().to_vec()]),
        ("huge-length", vec![huge_string]),
        ("truncated-hello", vec![hello[..hello.len() - 3].to_vec()]),
        ("oversized", vec![vec![0u8; MAX_MESSAGE * 2]]),
        (
            "oversized-hello",
            vec![{
                let mut h = hello.clone();
                h.resize(MAX_MESSAGE + 100, b'x');
                h
            }],
        ),
        (
            "before-hello",
            vec![
                encode(&ClientMsg::Ready),
                encode(&ClientMsg::Subscribe(Subscription {
                    events: u64::MAX,
                    packets: true,
                })),
            ],
        ),
        (
            "hello-twice",
            vec![hello.clone(), hello.clone(), vec![7; 33]],
        ),
        ("flood", vec![vec![1u8; 64]; 5000]),
    ];
    say("active");
    for (name, msgs) in cases {
        if Instant::now() >= limit {
            break;
        }
        let fd = match connect(path, false) {
            Ok(fd) => fd,
            Err(e) => {
                say(&format!("malformed case={name} connect={e:?}"));
                continue;
            }
        };
        let mut sent = 0usize;
        for m in &msgs {
            if send_raw(&fd, m) {
                sent += 1;
            }
        }
        // What the sensor answered, if anything, within a moment.
        let answer = match recv(&fd, Duration::from_millis(500)) {
            Got::Msg(SensorMsg::Refused { errno, .. }, _) => format!("refused:{errno}"),
            Got::Msg(SensorMsg::Detached { .. }, _) => "detached".into(),
            Got::Msg(SensorMsg::Welcome { .. }, _) => "welcome".into(),
            Got::Msg(_, _) => "other".into(),
            Got::Nothing => "nothing".into(),
            Got::Closed => "closed".into(),
        };
        say(&format!(
            "malformed case={name} sent={sent} answer={answer}"
        ));
    }
    say("end");
    Ok(())
}

/// One classic BPF instruction in the wire format of [`LinkProgram::insns`].
fn insn(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
    u64::from(code) << 48 | u64::from(jt) << 40 | u64::from(jf) << 32 | u64::from(k)
}

/// `ret #k`.
fn ret(k: u32) -> u64 {
    insn(0x06, 0, 0, k)
}

/// A socket with `insns` as its SYN filter (stream) or raw filter (raw), for every link type.
fn sock_with(id: u8, kind: SocketKind, insns: Vec<u64>) -> SocketSub {
    let progs = Some(
        [0, 1, 101, 113, 276]
            .iter()
            .map(|&linktype| LinkProgram {
                linktype,
                insns: insns.clone(),
            })
            .collect(),
    );
    let mut s = SocketSub {
        id,
        kind,
        events: if kind == SocketKind::Stream {
            (1 << 11) - 1
        } else {
            0
        },
        ..SocketSub::default()
    };
    match kind {
        SocketKind::Stream => s.syn = progs,
        SocketKind::Raw => s.raw = progs,
    }
    s
}

/// Filter programs and subscriptions the sensor must refuse, then long valid ones, then
/// filters that change all the time; prints `filters case=NAME answer=...` for each.
fn filters(path: &Path, limit: Instant) -> Result<()> {
    let a = attach(path, "hostile-filters")?;
    let stream = |id, insns| sock_with(id, SocketKind::Stream, insns);
    // A program of `n` loads of bytes near the frame's start, then a return that accepts.
    let long = |n: usize| {
        let mut p: Vec<u64> = (0..n).map(|i| insn(0x30, 0, 0, (i % 14) as u32)).collect();
        p.push(ret(0xffff));
        p
    };
    let bad: Vec<(&str, bool, Vec<SocketSub>)> = vec![
        (
            "bad-opcode",
            false,
            vec![stream(0, vec![insn(0xffff, 0, 0, 0), ret(1)])],
        ),
        (
            "jump-past-end",
            false,
            vec![stream(0, vec![insn(0x05, 0, 0, 100), ret(1)])],
        ),
        (
            "jump-offset-overflow",
            false,
            vec![stream(0, vec![insn(0x15, 255, 255, 0), ret(1)])],
        ),
        (
            "no-return",
            false,
            vec![stream(0, vec![insn(0x20, 0, 0, 0)])],
        ),
        ("empty-program", false, vec![stream(0, vec![])]),
        (
            "scratch-16",
            false,
            vec![stream(0, vec![insn(0x02, 0, 0, 16), ret(1)])],
        ),
        (
            "divide-by-zero",
            false,
            vec![stream(0, vec![insn(0x34, 0, 0, 0), ret(1)])],
        ),
        (
            "kernel-offset",
            false,
            vec![stream(0, vec![insn(0x20, 0, 0, 0xffff_f000), ret(1)])],
        ),
        (
            "too-long",
            false,
            vec![SocketSub {
                id: 0,
                syn: Some(vec![LinkProgram {
                    linktype: 1,
                    insns: long(4096),
                }]),
                ..SocketSub::default()
            }],
        ),
        ("socket-id-40", false, vec![stream(40, long(1))]),
        (
            "socket-twice",
            false,
            vec![stream(3, long(1)), stream(3, long(1))],
        ),
        (
            "33-sockets",
            false,
            (0..33).map(|i| stream(i % 32, long(1))).collect(),
        ),
        (
            "raw-without-packets",
            false,
            vec![sock_with(1, SocketKind::Raw, long(1))],
        ),
    ];
    say("active");
    let answer = |a: &Attached| -> String {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match recv(&a.sock, until.saturating_duration_since(Instant::now())) {
                Got::Msg(SensorMsg::Invalid { .. }, _) => return "invalid".into(),
                Got::Msg(SensorMsg::Subscribed, _) => return "subscribed".into(),
                Got::Msg(SensorMsg::Detached { .. }, _) => return "detached".into(),
                Got::Msg(_, _) => continue,
                Got::Nothing => return "nothing".into(),
                Got::Closed => return "closed".into(),
            }
        }
    };
    for (name, packets, sockets) in bad {
        let msg = ClientMsg::SubscribeSockets { packets, sockets };
        let sent = encode(&msg).len() <= MAX_MESSAGE && send(&a.sock, &msg);
        let got = if sent { answer(&a) } else { "unsent".into() };
        say(&format!("filters case={name} answer={got}"));
    }
    // Long valid programs: two stream and two raw sockets, as much as one message holds.
    let n = (MAX_MESSAGE - 1024) / 8 / 5 / 4;
    let heavy = ClientMsg::SubscribeSockets {
        packets: true,
        sockets: vec![
            stream(0, long(n)),
            stream(1, long(n)),
            sock_with(30, SocketKind::Raw, long(n)),
            sock_with(31, SocketKind::Raw, long(n)),
        ],
    };
    send(&a.sock, &heavy);
    say(&format!(
        "filters case=heavy insns={} answer={}",
        n + 1,
        answer(&a)
    ));
    send(&a.sock, &ClientMsg::Ready);
    // Flows that do not exist, sockets out of range.
    for (sock, worker, slot) in [(0u8, 0u16, u32::MAX), (200, 0, 0), (0, 999, 0), (31, 1, 7)] {
        send(
            &a.sock,
            &ClientMsg::StopMon {
                sock,
                worker,
                slot,
                generation: u32::MAX,
                side: 9,
            },
        );
    }
    // Filters that change all the time (below the message rate limit): every worker forgets
    // the changed sockets' decisions each time.
    let mut i = 0u32;
    let verdict = loop {
        if let Some(v) = a.verdict() {
            break v;
        }
        if Instant::now() >= limit {
            break "limit".into();
        }
        let accept = ret(if i.is_multiple_of(2) { 0xffff } else { 0 });
        send(
            &a.sock,
            &ClientMsg::SubscribeSockets {
                packets: true,
                sockets: vec![stream((i % 32) as u8, vec![accept])],
            },
        );
        i += 1;
        a.consume_all();
        std::thread::sleep(Duration::from_millis(3));
    };
    say(&format!("end changes={i} verdict={verdict}"));
    Ok(())
}

/// Opens `count` connections that say nothing and holds them for `hold`, reopening those the
/// sensor closes, as an attacker would.
fn idle(path: &Path, count: usize, hold: Duration, limit: Instant) -> Result<()> {
    // The soft limit on descriptors is often 1024: take the hard one, as the sensor does.
    let _ = mos_sensor::control::raise_open_files_limit();
    let mut open: Vec<OwnedFd> = Vec::with_capacity(count);
    let mut refused = 0u64;
    let deadline = (Instant::now() + Duration::from_secs(20)).min(limit);
    while open.len() < count && Instant::now() < deadline {
        match connect(path, true) {
            Ok(fd) => open.push(fd),
            // The listen backlog is full: the sensor has not accepted yet.
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => bail!("connect: {e}"),
        }
    }
    say(&format!("idle opened={}", open.len()));
    say("active");
    let until = (Instant::now() + hold).min(limit);
    while Instant::now() < until {
        // Replace the connections the sensor closed.
        for fd in open.iter_mut() {
            let mut p = [PollFd::new(&*fd, PollFlags::IN)];
            let closed = matches!(rustix::event::poll(&mut p, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(n) if n > 0)
                && matches!(recv(fd, Duration::ZERO), Got::Closed | Got::Msg(..));
            if closed {
                refused += 1;
                if let Ok(new) = connect(path, true) {
                    *fd = new;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    say(&format!("end closed_by_sensor={refused}"));
    Ok(())
}
