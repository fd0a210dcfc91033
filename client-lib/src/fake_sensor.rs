//! A sensor in miniature for the library's tests: the three regions in memfds, laid out and
//! written with shm-layout's sensor-side APIs, and a control socket served by a thread in a
//! temporary directory. Tests write flows, stream bytes, packets and events by hand, then attach
//! through [`crate::Mos::attach`] exactly as an analyzer does.
//!
//! Stream bytes go into chunks taken from each worker's pool as they are written and named in
//! the buffer's chunk map, as the sensor does; [`MainWriter::set_flow`] frees the chunks a
//! side's head has moved past. Chunks are handed out from the top of the pool down and freed
//! ones are reused first, so consecutive stream chunks are never neighbours in memory and a
//! freed chunk soon holds other bytes.
//!
//! Test support only (the `fake-sensor` feature): it panics on any failure.

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{ftruncate, memfd_create, open, MemfdFlags, Mode, OFlags};
use rustix::net::{
    accept_with, bind, listen, recvmsg, sendmsg, socket_with, AddressFamily, RecvAncillaryBuffer,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags,
    SocketType,
};
use shm_layout::control::{
    decode, encode, ClientMsg, SensorMsg, SocketSub, Subscription, MAX_MESSAGE,
};
use shm_layout::layout::{
    AnalyzerPage, ConfigInfo, EventRecord, EventRingHeader, EventSlot, FlowData, FlowSlot, Header,
    PktInfo, PktLogEntry, PktLogHeader, RingMeta, RingMetaSlot, ABI_MAJOR, ABI_MINOR, MAGIC,
    NO_CHUNK,
};
use shm_layout::pktlog::PktLogWriter;
use shm_layout::plan::{EventPlan, MainPlan, PAGE_LEN};
use shm_layout::region::Mapping;
use shm_layout::ring::Producer;
use shm_layout::Words;
use std::io::{IoSlice, IoSliceMut};
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Sizes of a fake sensor.
#[derive(Clone, Copy, Debug)]
pub struct FakeConfig {
    /// Workers (each with its slots, stream buffers, chunks, packet log and event ring).
    pub nworkers: usize,
    /// Bytes per stream chunk (a power of two).
    pub chunk_size: u64,
    /// Stream buffers per worker.
    pub buffers: u64,
    /// Stream chunks per worker.
    pub chunks: u64,
    /// Entries of each buffer's chunk map (a power of two): a side holds at most
    /// `chunk_size * map_len` bytes.
    pub map_len: u64,
    /// Flow slots per worker.
    pub slots_per_worker: u64,
    /// Packet-log entries per worker.
    pub pktlog_entries: u64,
    /// Packet-log frame bytes per worker.
    pub pktlog_bytes: u64,
    /// Records per event ring.
    pub event_capacity: u64,
    /// The overlap policy code the header publishes.
    pub overlap_policy: u64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            nworkers: 2,
            chunk_size: 64,
            buffers: 4,
            chunks: 16,
            map_len: 4,
            slots_per_worker: 8,
            pktlog_entries: 4,
            pktlog_bytes: 1024,
            event_capacity: 16,
            overlap_policy: 0,
        }
    }
}

/// What the control thread saw.
#[derive(Debug, Default)]
pub struct ServerLog {
    /// The last `Hello`: ABI major, minor, name.
    pub hello: Option<(u16, u16, String)>,
    /// Every subscription, in order (a per-socket one as the union of its sockets' events).
    pub subscriptions: Vec<Subscription>,
    /// Every per-socket subscription, in order: packets, and the sockets.
    pub socket_subscriptions: Vec<(bool, Vec<SocketSub>)>,
    /// Every `StopMon`: socket, worker, slot, generation.
    pub stop_mons: Vec<(u8, u16, u32, u32)>,
    /// Every `Workers` mask, in order.
    pub workers: Vec<u32>,
    /// `Ready` messages.
    pub ready: u32,
    /// `Detach` messages.
    pub detach: u32,
    /// Connections accepted.
    pub connections: u32,
}

enum Cmd {
    Send(SensorMsg),
    HangUp,
}

/// Which chunks hold what, shared by a [`MainWriter`] and the writers it makes.
#[derive(Debug)]
struct ChunkBook {
    /// Per worker, the free chunks; the last one is taken first.
    free: Vec<Vec<u32>>,
    /// Per worker, per buffer and map entry: the chunk the entry names and the stream chunk
    /// number (offset / chunk size) it holds.
    held: Vec<Vec<Option<(u32, u64)>>>,
}

/// Writes the main region through its own writable mapping of the memfd.
#[derive(Debug)]
pub struct MainWriter {
    fd: OwnedFd,
    map: Mapping,
    plan: MainPlan,
    cfg: ConfigInfo,
    book: Arc<Mutex<ChunkBook>>,
}

impl MainWriter {
    fn new(
        fd: OwnedFd,
        plan: MainPlan,
        cfg: ConfigInfo,
        book: Arc<Mutex<ChunkBook>>,
    ) -> MainWriter {
        let map = Mapping::map(fd.as_fd(), plan.len as usize, true, false).unwrap();
        MainWriter {
            fd,
            map,
            plan,
            cfg,
            book,
        }
    }

    /// Another writer of the same region (for a hook that plays the sensor mid-call).
    pub fn another(&self) -> MainWriter {
        MainWriter::new(
            self.fd.try_clone().unwrap(),
            self.plan.clone(),
            self.cfg,
            self.book.clone(),
        )
    }

    fn book(&self) -> std::sync::MutexGuard<'_, ChunkBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffer `buffer`'s chunk map in worker `w`.
    fn chunk_map(&self, w: usize, buffer: u32) -> &[AtomicU32] {
        let n = self.cfg.chunk_map_len as usize;
        let maps: &[AtomicU32] = self
            .map
            .slice(
                self.plan.workers[w].chunk_map_off as usize,
                self.cfg.buffers_per_worker as usize * n,
            )
            .unwrap();
        &maps[buffer as usize * n..][..n]
    }

    /// Frees the chunks of buffer `buffer` of worker `w` that hold only offsets below `head`:
    /// clears their map entries and puts them back in the pool.
    fn free_below(&self, w: usize, buffer: u32, head: u64) {
        let map = self.chunk_map(w, buffer);
        let n = map.len();
        let mut book = self.book();
        let book = &mut *book;
        for (e, held) in book.held[w][buffer as usize * n..][..n]
            .iter_mut()
            .enumerate()
        {
            if let Some((c, k)) = *held {
                if (k + 1).saturating_mul(self.cfg.chunk_size) <= head {
                    map[e].store(NO_CHUNK, Ordering::Release);
                    book.free[w].push(c);
                    *held = None;
                }
            }
        }
    }

    /// Stores `entry` in the chunk-map entry of buffer `buffer` that covers stream offset
    /// `offset`, bypassing the pool's bookkeeping: what a buggy or hostile sensor does.
    pub fn spoil_chunk_map(&self, w: usize, buffer: u32, offset: u64, entry: u32) {
        let map = self.chunk_map(w, buffer);
        let e = ((offset / self.cfg.chunk_size) % self.cfg.chunk_map_len) as usize;
        map[e].store(entry, Ordering::Release);
    }

    /// The chunk the map of buffer `buffer` names for stream offset `offset` ([`NO_CHUNK`] for
    /// none).
    pub fn chunk_of(&self, w: usize, buffer: u32, offset: u64) -> u32 {
        let map = self.chunk_map(w, buffer);
        let e = ((offset / self.cfg.chunk_size) % self.cfg.chunk_map_len) as usize;
        map[e].load(Ordering::Acquire)
    }

    /// The main region's header.
    pub fn header(&self) -> &Header {
        self.map.get(0).unwrap()
    }

    /// Publishes a flow slot and the metadata of the buffers its sides hold, under the slot's
    /// stamp; then, as the sensor does once a head has moved, frees the chunks each side's
    /// buffer holds below its head.
    pub fn set_flow(&self, w: usize, slot: u32, data: &FlowData, metas: &[(u32, RingMeta)]) {
        let p = &self.plan.workers[w];
        let slots: &[FlowSlot] = self
            .map
            .slice(p.slots_off as usize, self.cfg.slots_per_worker as usize)
            .unwrap();
        let meta_slots: &[RingMetaSlot] = self
            .map
            .slice(
                p.ring_meta_off as usize,
                self.cfg.buffers_per_worker as usize,
            )
            .unwrap();
        let s = &slots[slot as usize];
        s.stamp.begin_write();
        data.store(&s.words);
        for (ring, m) in metas {
            m.store_prefix(&meta_slots[*ring as usize].words);
        }
        s.stamp.end_write();
        for side in &data.sides {
            if u64::from(side.ring) < self.cfg.buffers_per_worker {
                self.free_below(w, side.ring, side.head);
            }
        }
    }

    /// Opens a flow slot's write section and leaves it open, as a sensor that died while
    /// writing it would.
    pub fn leave_busy(&self, w: usize, slot: u32) {
        let p = &self.plan.workers[w];
        let slots: &[FlowSlot] = self
            .map
            .slice(p.slots_off as usize, self.cfg.slots_per_worker as usize)
            .unwrap();
        slots[slot as usize].stamp.begin_write();
    }

    /// Writes stream bytes at stream offset `offset` of the side using buffer `ring`, as the
    /// sensor does: each piece into the chunk the buffer's map names for it, or into a chunk
    /// taken from the pool, whose map entry is stored (release) after its bytes. A map entry
    /// that still names a chunk holding older offsets (a span back) gives that chunk up first,
    /// as a fixed ring overwrote them: the test then publishes a head past them.
    ///
    /// Panics when the worker's pool has no free chunk.
    pub fn write_ring(&self, w: usize, ring: u32, offset: u64, bytes: &[u8]) {
        assert!(
            u64::from(ring) < self.cfg.buffers_per_worker,
            "no buffer {ring}"
        );
        let m = Mapping::map(self.fd.as_fd(), self.plan.len as usize, true, false).unwrap();
        let size = self.cfg.chunk_size;
        let chunks = m
            .take_bytes(
                self.plan.workers[w].chunks_off as usize,
                (self.cfg.chunks_per_worker * size) as usize,
            )
            .unwrap();
        let map = self.chunk_map(w, ring);
        let n = map.len();
        let mut done = 0;
        while done < bytes.len() {
            let o = offset + done as u64;
            let (k, within) = (o / size, o % size);
            let e = (k % n as u64) as usize;
            let len = ((size - within) as usize).min(bytes.len() - done);
            let mut book = self.book();
            let book = &mut *book;
            let held = &mut book.held[w][ring as usize * n + e];
            let (c, fresh) = match *held {
                Some((c, hk)) if hk == k => (c, false),
                old => {
                    if let Some((c, _)) = old {
                        map[e].store(NO_CHUNK, Ordering::Release);
                        book.free[w].push(c);
                    }
                    let c = book.free[w].pop().unwrap_or_else(|| {
                        panic!("fake sensor: worker {w} has no free chunk (FakeConfig::chunks)")
                    });
                    *held = Some((c, k));
                    (c, true)
                }
            };
            let at = (u64::from(c) * size + within) as usize;
            chunks[at..at + len].copy_from_slice(&bytes[done..done + len]);
            if fresh {
                map[e].store(c, Ordering::Release);
            }
            done += len;
        }
    }

    /// Logs a frame in worker `w`'s packet log; returns its sequence.
    pub fn log_packet(&self, w: usize, info: PktInfo, frame: &[u8]) -> u64 {
        let m = Mapping::map(self.fd.as_fd(), self.plan.len as usize, true, false).unwrap();
        let p = &self.plan.workers[w];
        // Bytes first: no range can be taken once a shared view of the mapping exists.
        let bytes = m
            .take_bytes(p.pktlog_bytes_off as usize, self.cfg.pktlog_bytes as usize)
            .unwrap();
        let hdr: &PktLogHeader = m.get(p.pktlog_off as usize).unwrap();
        let entries: &[PktLogEntry] = m
            .slice(
                p.pktlog_off as usize + size_of::<PktLogHeader>(),
                self.cfg.pktlog_entries as usize,
            )
            .unwrap();
        let mut wr = PktLogWriter::new(hdr, entries, bytes).unwrap();
        wr.append(info, frame)
    }
}

/// The fake sensor.
#[derive(Debug)]
pub struct FakeSensor {
    /// Writes the main region.
    pub main: MainWriter,
    events: Mapping,
    page: Mapping,
    event_plan: EventPlan,
    /// The sizes it was made with.
    pub cfg: FakeConfig,
    _dir: tempfile::TempDir,
    path: PathBuf,
    log: Arc<Mutex<ServerLog>>,
    cmds: Mutex<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    quit: Arc<std::sync::atomic::AtomicBool>,
}

fn memfd(name: &str, len: u64) -> OwnedFd {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&fd, len).unwrap();
    fd
}

/// A read-only descriptor of the same file (what the real sensor passes for shared regions).
fn read_only(fd: &OwnedFd) -> OwnedFd {
    open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// How the fake answers `Hello`.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A welcome with the three descriptors.
    Welcome,
    /// A refusal with this errno name and reason.
    Refuse(String, String),
    /// A welcome whose epoch differs from the header's.
    WrongEpoch,
}

impl FakeSensor {
    /// A fake sensor that welcomes analyzers.
    pub fn new(cfg: FakeConfig) -> FakeSensor {
        Self::with(cfg, Answer::Welcome, |_| {})
    }

    /// A fake whose header `edit` may spoil, answering hello with `answer`.
    pub fn with(cfg: FakeConfig, answer: Answer, edit: impl FnOnce(&mut Header)) -> FakeSensor {
        let config = ConfigInfo {
            chunk_size: cfg.chunk_size,
            buffers_per_worker: cfg.buffers,
            chunks_per_worker: cfg.chunks,
            chunk_map_len: cfg.map_len,
            slots_per_worker: cfg.slots_per_worker,
            pktlog_entries: cfg.pktlog_entries,
            pktlog_bytes: cfg.pktlog_bytes,
            event_ring_len: cfg.event_capacity,
            idle_timeout_ns: 1,
            overlap_policy: cfg.overlap_policy,
        };
        let plan = MainPlan::new(&config, cfg.nworkers, 4096).unwrap();
        let main_fd = memfd("mos-main", plan.len);
        {
            let mut m = Mapping::map(main_fd.as_fd(), plan.len as usize, true, false).unwrap();
            let h: &mut Header = m.get_mut(0).unwrap();
            h.magic = MAGIC;
            h.abi_major = ABI_MAJOR;
            h.abi_minor = ABI_MINOR;
            h.header_size = size_of::<Header>() as u32;
            h.epoch = 0xfeed;
            h.sensor_pid = 1;
            h.nworkers = cfg.nworkers as u64;
            h.region_len = plan.len;
            h.config = config;
            for (i, w) in plan.workers.iter().enumerate() {
                h.workers[i].slots_off = w.slots_off;
                h.workers[i].ring_meta_off = w.ring_meta_off;
                h.workers[i].chunk_map_off = w.chunk_map_off;
                h.workers[i].chunks_off = w.chunks_off;
                h.workers[i].pktlog_off = w.pktlog_off;
            }
            h.state
                .store(shm_layout::layout::sensor_state::RUNNING, Ordering::Relaxed);
            edit(h);
            for w in &plan.workers {
                let map: &[AtomicU32] = m
                    .slice(
                        w.chunk_map_off as usize,
                        (cfg.buffers * cfg.map_len) as usize,
                    )
                    .unwrap();
                for e in map {
                    e.store(NO_CHUNK, Ordering::Relaxed);
                }
            }
        }
        let book = Arc::new(Mutex::new(ChunkBook {
            free: vec![(0..cfg.chunks as u32).collect(); cfg.nworkers],
            held: vec![vec![None; (cfg.buffers * cfg.map_len) as usize]; cfg.nworkers],
        }));
        let event_plan = EventPlan::new(cfg.event_capacity, cfg.nworkers).unwrap();
        let events_fd = memfd("mos-events", event_plan.len);
        let mut events =
            Mapping::map(events_fd.as_fd(), event_plan.len as usize, true, false).unwrap();
        for w in 0..cfg.nworkers {
            let h: &mut EventRingHeader = events.get_mut(event_plan.ring_off(w) as usize).unwrap();
            h.capacity = cfg.event_capacity;
        }
        let page_fd = memfd("mos-page", PAGE_LEN);
        let page = Mapping::map(page_fd.as_fd(), PAGE_LEN as usize, true, false).unwrap();
        let welcome = SensorMsg::Welcome {
            analyzer_id: 7,
            epoch: if matches!(answer, Answer::WrongEpoch) {
                0xbad
            } else {
                0xfeed
            },
            main_len: plan.len,
            events_len: event_plan.len,
            event_capacity: cfg.event_capacity,
            nworkers: cfg.nworkers as u32,
            page_len: PAGE_LEN,
        };
        let reply = match answer {
            Answer::Refuse(errno, reason) => SensorMsg::Refused { errno, reason },
            _ => welcome,
        };
        let pass = [
            read_only(&main_fd),
            read_only(&events_fd),
            page_fd.try_clone().unwrap(),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        listen(&listener, 4).unwrap();
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let (tx, rx) = channel();
        let quit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let log = log.clone();
            let quit = quit.clone();
            std::thread::spawn(move || serve(listener, pass, reply, log, rx, quit))
        };
        FakeSensor {
            main: MainWriter::new(main_fd, plan, config, book),
            events,
            page,
            event_plan,
            cfg,
            _dir: dir,
            path,
            log,
            cmds: Mutex::new(tx),
            thread: Some(thread),
            quit,
        }
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the control thread saw so far.
    pub fn log(&self) -> std::sync::MutexGuard<'_, ServerLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self, w: usize) -> (&EventRingHeader, &[EventSlot]) {
        let h = self
            .events
            .get(self.event_plan.ring_off(w) as usize)
            .unwrap();
        let s = self
            .events
            .slice(
                self.event_plan.records_off(w) as usize,
                self.cfg.event_capacity as usize,
            )
            .unwrap();
        (h, s)
    }

    /// The analyzer's page (its consumer indices and heartbeat).
    pub fn page(&self) -> &AnalyzerPage {
        self.page.get(0).unwrap()
    }

    /// Publishes an event on worker `w`'s ring; `false` when the ring is full.
    pub fn push_event(&self, w: usize, rec: EventRecord) -> bool {
        let (h, s) = self.ring(w);
        let mut p = Producer::new(h, s, &self.page().consumer[w]).unwrap();
        p.refresh_consumer();
        p.try_push(&rec)
    }

    /// Counts `n` events dropped for the analyzer on worker `w`'s ring.
    pub fn count_drop(&self, w: usize, n: u64) {
        self.ring(w).0.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks the analyzer detached on worker `w`'s ring.
    pub fn mark_detached(&self, w: usize, reason: u64) {
        self.ring(w).0.detached.store(reason, Ordering::Release);
    }

    /// Sets the header's `sensor_state`.
    pub fn set_state(&self, state: u64) {
        self.main.header().state.store(state, Ordering::Release);
    }

    /// Sends a message to the attached analyzer.
    pub fn send(&self, msg: SensorMsg) {
        self.cmds.lock().unwrap().send(Cmd::Send(msg)).unwrap();
    }

    /// Closes the analyzer's connection (as a killed sensor would).
    pub fn hang_up(&self) {
        self.cmds.lock().unwrap().send(Cmd::HangUp).unwrap();
    }
}

impl Drop for FakeSensor {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_msg(conn: &OwnedFd, msg: &SensorMsg, fds: &[OwnedFd]) {
    let bytes = encode(msg);
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
    }
    let _ = sendmsg(
        conn,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    );
}

fn serve(
    listener: OwnedFd,
    pass: [OwnedFd; 3],
    reply: SensorMsg,
    log: Arc<Mutex<ServerLog>>,
    cmds: Receiver<Cmd>,
    quit: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut conn: Option<OwnedFd> = None;
    let tick = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 5_000_000,
    };
    while !quit.load(Ordering::Relaxed) {
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                Cmd::Send(m) => {
                    if let Some(c) = &conn {
                        send_msg(c, &m, &[]);
                    }
                }
                Cmd::HangUp => conn = None,
            }
        }
        let Some(c) = &conn else {
            let mut fds = [PollFd::new(&listener, PollFlags::IN)];
            if poll(&mut fds, Some(&tick)).unwrap_or(0) > 0 {
                if let Ok(c) = accept_with(&listener, SocketFlags::CLOEXEC) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).connections += 1;
                    conn = Some(c);
                }
            }
            continue;
        };
        let mut fds = [PollFd::new(c, PollFlags::IN)];
        if poll(&mut fds, Some(&tick)).unwrap_or(0) == 0 {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut control = RecvAncillaryBuffer::default();
        let got = match recvmsg(
            c,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::empty(),
        ) {
            Ok(g) if g.bytes > 0 => g,
            _ => {
                conn = None;
                continue;
            }
        };
        let Ok(msg) = decode::<ClientMsg>(&buf[..got.bytes]) else {
            continue;
        };
        match msg {
            ClientMsg::Hello {
                abi_major,
                abi_minor,
                name,
            } => {
                log.lock().unwrap_or_else(|e| e.into_inner()).hello =
                    Some((abi_major, abi_minor, name));
                match &reply {
                    SensorMsg::Welcome { .. } => send_msg(c, &reply, &pass),
                    other => send_msg(c, other, &[]),
                }
            }
            ClientMsg::Subscribe(s) => {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .subscriptions
                    .push(s);
                send_msg(c, &SensorMsg::Subscribed, &[]);
            }
            ClientMsg::SubscribeSockets { packets, sockets } => {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.subscriptions.push(Subscription {
                    events: sockets.iter().fold(0, |m, s| m | s.events),
                    packets,
                });
                l.socket_subscriptions.push((packets, sockets));
                drop(l);
                send_msg(c, &SensorMsg::Subscribed, &[]);
            }
            ClientMsg::StopMon {
                sock,
                worker,
                slot,
                generation,
                ..
            } => log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stop_mons
                .push((sock, worker, slot, generation)),
            ClientMsg::Workers { mask } => log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .workers
                .push(mask),
            ClientMsg::Ready => log.lock().unwrap_or_else(|e| e.into_inner()).ready += 1,
            ClientMsg::Detach => log.lock().unwrap_or_else(|e| e.into_inner()).detach += 1,
            // No analyzer sends it; the fake has no state to report.
            ClientMsg::Status => {}
        }
    }
}
