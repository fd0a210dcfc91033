//! The programming model against [`crate::fake_sensor`]: user-defined events, timers, user
//! contexts, `MOS_STOP_MON`, per-flow registration, event-bounded `peek`, the sockets an
//! event is addressed to, and the loop's entry points. Events are pushed by hand, each with
//! the `socks` bits the sensor would give it, and dispatched with `poll`.

use crate::fake_sensor::{FakeConfig, FakeSensor};
use crate::*;
use shm_layout::layout::{
    event_kind, flow_flags, side_flags, EventRecord, FlowData, RingMeta, SideData, NO_PKT, NO_RING,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const W: usize = 0;
const FLOW: FlowId = FlowId {
    worker: 0,
    slot: 3,
    generation: 5,
};
const OTHER: FlowId = FlowId {
    worker: 0,
    slot: 4,
    generation: 9,
};
/// Every socket, as a subscription without filters gets.
const EVERY_SOCK: u32 = u32::MAX;
/// A capture time (ns) for the events of these tests.
const T0: u64 = 1_700_000_000_000_000_000;

fn fake() -> FakeSensor {
    FakeSensor::new(FakeConfig {
        event_capacity: 1024,
        ..FakeConfig::default()
    })
}

fn attach_on(fake: &FakeSensor, timer_clock: TimerClock) -> Mos {
    let mos = Mos::attach(&AttachOptions {
        control: fake.path().to_path_buf(),
        name: "model-test".into(),
        timer_clock,
        ..AttachOptions::default()
    })
    .unwrap();
    // Both flows are live for the whole test, so that no sweep takes them for gone.
    publish(fake, OTHER, 2, b"");
    publish(fake, FLOW, 1, b"");
    mos
}

fn attach(fake: &FakeSensor) -> Mos {
    attach_on(fake, TimerClock::Wall)
}

fn side(tail: u64, ring: u32) -> SideData {
    SideData {
        head: 0,
        tail,
        ring,
        last_pkt: NO_PKT,
        flags: side_flags::ANCHORED,
        ..Default::default()
    }
}

/// Publishes `flow` as a live connection whose server side (what the client sent) holds
/// `sent` from stream offset 0 in buffer `ring`.
fn publish(fake: &FakeSensor, flow: FlowId, ring: u32, sent: &[u8]) {
    let svr = if sent.is_empty() {
        side(0, NO_RING)
    } else {
        fake.main.write_ring(W, ring, 0, sent);
        side(sent.len() as u64, ring)
    };
    let data = FlowData {
        generation: flow.generation,
        flags: flow_flags::LIVE,
        serial: u64::from(flow.slot),
        port: [40000, 80],
        sides: [side(0, NO_RING), svr],
        ..Default::default()
    };
    let metas: &[(u32, RingMeta)] = if sent.is_empty() {
        &[]
    } else {
        &[(ring, RingMeta::default())]
    };
    fake.main.set_flow(W, flow.slot, &data, metas);
}

/// An event of `flow`'s `side` for the sockets `socks`, at hook `MOS_NULL`.
fn rec(flow: FlowId, kind: u8, side: Side, socks: u32) -> EventRecord {
    EventRecord {
        slot: flow.slot,
        generation: flow.generation,
        kind,
        side: side.code(),
        hook: 0,
        ts_ns: T0,
        pkt_pos: u64::MAX,
        pkt_ref: NO_PKT,
        socks,
        ..Default::default()
    }
}

/// `CONN_NEW_DATA` on `side` of `flow` announcing the stream up to `tail`, for every socket.
fn new_data(flow: FlowId, side: Side, tail: u64) -> EventRecord {
    EventRecord {
        tail,
        ..rec(flow, event_kind::CONN_NEW_DATA, side, EVERY_SOCK)
    }
}

fn conn_end(flow: FlowId, side: Side) -> EventRecord {
    rec(flow, event_kind::CONN_END, side, EVERY_SOCK)
}

fn conn_start(flow: FlowId) -> EventRecord {
    rec(flow, event_kind::CONN_START, Side::Cli, EVERY_SOCK)
}

/// Publishes `events` on worker 0's ring and dispatches them.
fn deliver(fake: &FakeSensor, mos: &mut Mos, events: &[EventRecord]) {
    for e in events {
        assert!(fake.push_event(W, *e), "the event ring is full");
    }
    assert_eq!(mos.poll().unwrap(), RunEnd::Elapsed);
    assert!(!mos.wait(Duration::ZERO), "poll left events behind");
}

/// The events socket `sock` last asked the sensor for.
fn subscribed(fake: &FakeSensor, sock: SockId) -> u64 {
    let log = fake.log();
    let (_, socks) = log.socket_subscriptions.last().expect("no subscription");
    socks
        .iter()
        .find(|s| u32::from(s.id) == sock.0)
        .map_or(0, |s| s.events)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Log<T> = Rc<RefCell<Vec<T>>>;

fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

// ---------------------------------------------------------------------------------------------
// User-defined events

#[test]
fn a_defined_event_fires_with_its_base_events_data_under_its_own_id() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let filtered = log();
    let f = filtered.clone();
    let client_data = mos
        .define_event(EventMask::CONN_NEW_DATA, move |_, ev| {
            f.borrow_mut().push((ev.id, ev.kind, ev.side, ev.tail));
            ev.side == Some(Side::Svr)
        })
        .unwrap();
    assert_eq!(client_data.0.count_ones(), 1);
    assert!(client_data.0 > EventMask::ALL.0, "{client_data:?}");
    let fired = log();
    let f = fired.clone();
    mos.register_callback(s, client_data, Hook::Null, move |_, ev| {
        f.borrow_mut()
            .push((ev.id, ev.kind, ev.side, ev.tail, ev.flow))
    })
    .unwrap();
    deliver(
        &fake,
        &mut mos,
        &[
            new_data(FLOW, Side::Svr, 10),
            new_data(FLOW, Side::Cli, 7),
            conn_start(FLOW),
        ],
    );
    // The filter saw both occurrences of its base event, as the base event; nothing else.
    assert_eq!(
        filtered.borrow().clone(),
        vec![
            (
                EventMask::CONN_NEW_DATA,
                EventKind::ConnNewData,
                Some(Side::Svr),
                10
            ),
            (
                EventMask::CONN_NEW_DATA,
                EventKind::ConnNewData,
                Some(Side::Cli),
                7
            ),
        ]
    );
    assert_eq!(
        fired.borrow().clone(),
        vec![(
            client_data,
            EventKind::ConnNewData,
            Some(Side::Svr),
            10,
            Some(FLOW)
        )]
    );
}

#[test]
fn a_chain_of_defined_events_fires_link_by_link_and_a_false_filter_ends_it() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let first_calls = Rc::new(RefCell::new(0));
    let n = first_calls.clone();
    let client_data = mos
        .define_event(EventMask::CONN_NEW_DATA, move |_, ev| {
            *n.borrow_mut() += 1;
            ev.side == Some(Side::Svr)
        })
        .unwrap();
    let second = log();
    let f = second.clone();
    let ten_bytes = mos
        .define_event(client_data, move |_, ev| {
            f.borrow_mut().push((ev.id, ev.kind, ev.tail));
            ev.tail >= 10
        })
        .unwrap();
    assert_ne!(client_data, ten_bytes);
    let fired = log();
    let f = fired.clone();
    mos.register_callback(s, ten_bytes, Hook::Null, move |_, ev| {
        f.borrow_mut().push((ev.id, ev.kind, ev.side, ev.tail))
    })
    .unwrap();
    deliver(
        &fake,
        &mut mos,
        &[
            new_data(FLOW, Side::Svr, 5),
            new_data(FLOW, Side::Cli, 12),
            new_data(FLOW, Side::Svr, 12),
        ],
    );
    assert_eq!(*first_calls.borrow(), 3);
    // The second link runs only where the first said yes, and sees the first link's id.
    assert_eq!(
        second.borrow().clone(),
        vec![
            (client_data, EventKind::ConnNewData, 5),
            (client_data, EventKind::ConnNewData, 12)
        ]
    );
    assert_eq!(
        fired.borrow().clone(),
        vec![(ten_bytes, EventKind::ConnNewData, Some(Side::Svr), 12)]
    );
}

#[test]
fn defined_events_run_per_socket_and_only_for_the_sockets_an_event_is_for() {
    let fake = fake();
    let mut mos = attach(&fake);
    let a = mos.socket().unwrap();
    let b = mos.socket().unwrap();
    let filter_calls = Rc::new(RefCell::new(0));
    let n = filter_calls.clone();
    let any_data = mos
        .define_event(EventMask::CONN_NEW_DATA, move |_, _| {
            *n.borrow_mut() += 1;
            true
        })
        .unwrap();
    let seen = log();
    let f = seen.clone();
    mos.register_callback(a, any_data, Hook::Null, move |_, ev| {
        f.borrow_mut().push(('a', ev.id))
    })
    .unwrap();
    let f = seen.clone();
    mos.register_callback(b, EventMask::CONN_NEW_DATA, Hook::Null, move |_, ev| {
        f.borrow_mut().push(('b', ev.id))
    })
    .unwrap();
    let for_socks = |socks| EventRecord {
        socks,
        ..new_data(FLOW, Side::Svr, 1)
    };
    // Only b's: a's filter does not run, a's callback neither.
    deliver(&fake, &mut mos, &[for_socks(1 << b.0)]);
    assert_eq!(*filter_calls.borrow(), 0);
    assert_eq!(seen.borrow().clone(), vec![('b', EventMask::CONN_NEW_DATA)]);
    // Only a's.
    seen.borrow_mut().clear();
    deliver(&fake, &mut mos, &[for_socks(1 << a.0)]);
    assert_eq!(*filter_calls.borrow(), 1);
    assert_eq!(seen.borrow().clone(), vec![('a', any_data)]);
    // Both: the filter runs for a, the one socket that needs the event it defines.
    seen.borrow_mut().clear();
    deliver(&fake, &mut mos, &[for_socks((1 << a.0) | (1 << b.0))]);
    assert_eq!(*filter_calls.borrow(), 2);
    assert_eq!(
        seen.borrow().clone(),
        vec![('a', any_data), ('b', EventMask::CONN_NEW_DATA)]
    );
    let want = EventMask::CONN_NEW_DATA.0 | EventMask::CONN_END.0;
    assert_eq!((subscribed(&fake, a), subscribed(&fake, b)), (want, want));
}

#[test]
fn allocated_events_fire_when_a_callback_or_a_filter_raises_them_with_the_same_data() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let by_callback = mos.alloc_event(EventMask::CONN_NEW_DATA).unwrap();
    let by_filter = mos.alloc_event(EventMask::CONN_START).unwrap();
    let raised = log();
    let r = raised.clone();
    let never = mos
        .define_event(EventMask::CONN_START, move |ctx, _| {
            r.borrow_mut().push(ctx.raise_event(by_filter).is_ok());
            false
        })
        .unwrap();
    let r = raised.clone();
    mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, _| {
        r.borrow_mut().push(ctx.raise_event(by_callback).is_ok())
    })
    .unwrap();
    let fired = log();
    for id in [by_callback, by_filter, never] {
        let f = fired.clone();
        mos.register_callback(s, id, Hook::Null, move |_, ev| {
            f.borrow_mut().push((ev.id, ev.kind, ev.side, ev.tail))
        })
        .unwrap();
    }
    deliver(
        &fake,
        &mut mos,
        &[new_data(FLOW, Side::Svr, 10), conn_start(FLOW)],
    );
    assert_eq!(raised.borrow().clone(), vec![true, true]);
    assert_eq!(
        fired.borrow().clone(),
        vec![
            (by_callback, EventKind::ConnNewData, Some(Side::Svr), 10),
            (by_filter, EventKind::ConnStart, Some(Side::Cli), 0),
        ]
    );
    // What the sensor is asked for: the built-in parents, never the user-defined bits.
    assert_eq!(
        subscribed(&fake, s),
        EventMask::CONN_NEW_DATA.0 | EventMask::CONN_START.0 | EventMask::CONN_END.0
    );
}

#[test]
fn raise_event_is_einval_outside_dispatch_and_for_events_alloc_event_did_not_make() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let made = mos.alloc_event(EventMask::CONN_NEW_DATA).unwrap();
    let defined = mos
        .define_event(EventMask::CONN_NEW_DATA, |_, _| false)
        .unwrap();
    let e = mos.with_ctx(|c| c.raise_event(made)).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    let errnos = log();
    let r = errnos.clone();
    mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, _| {
        for id in [
            defined,
            EventMask::CONN_END,
            EventMask(made.0 | defined.0),
            EventMask(1 << 50),
        ] {
            r.borrow_mut()
                .push(ctx.raise_event(id).map_err(|e| e.errno()));
        }
    })
    .unwrap();
    let fired = Rc::new(RefCell::new(0));
    let f = fired.clone();
    mos.register_callback(s, defined, Hook::Null, move |_, _| *f.borrow_mut() += 1)
        .unwrap();
    deliver(&fake, &mut mos, &[new_data(FLOW, Side::Svr, 1)]);
    assert_eq!(errnos.borrow().clone(), vec![Err(Errno::EINVAL); 4]);
    assert_eq!(*fired.borrow(), 0);
    // A timer runs outside the dispatch of any event.
    let from_timer = log();
    let r = from_timer.clone();
    mos.settimer(1, Duration::ZERO, move |ctx, _| {
        r.borrow_mut()
            .push(ctx.raise_event(made).map_err(|e| e.errno()))
    });
    assert_eq!(
        mos.run_for(Duration::from_millis(20)).unwrap(),
        RunEnd::Elapsed
    );
    assert_eq!(from_timer.borrow().clone(), vec![Err(Errno::EINVAL)]);
}

#[test]
fn runaway_raising_stops_at_max_raises_per_occurrence() {
    let fake = fake();
    let mut mos = attach(&fake);
    let many = mos.socket().unwrap();
    let looping = mos.socket().unwrap();
    let e = mos.alloc_event(EventMask::CONN_NEW_DATA).unwrap();
    let again = mos.alloc_event(EventMask::CONN_NEW_DATA).unwrap();
    // One callback raising in a loop: the first MAX_RAISES succeed.
    let results = log();
    let r = results.clone();
    mos.register_callback(many, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, _| {
        let got: Vec<_> = (0..MAX_RAISES + 10)
            .map(|_| ctx.raise_event(e).map_err(|e| e.errno()))
            .collect();
        r.borrow_mut().push(got);
    })
    .unwrap();
    let fired = Rc::new(RefCell::new(0usize));
    let f = fired.clone();
    mos.register_callback(many, e, Hook::Null, move |_, _| *f.borrow_mut() += 1)
        .unwrap();
    // A callback raising the event it is called for, forever.
    mos.register_callback(
        looping,
        EventMask::CONN_NEW_DATA,
        Hook::Null,
        move |ctx, _| {
            ctx.raise_event(again).unwrap();
        },
    )
    .unwrap();
    let loops = log();
    let l = loops.clone();
    mos.register_callback(looping, again, Hook::Null, move |ctx, ev| {
        l.borrow_mut().push(ev.tail);
        let _ = ctx.raise_event(again);
    })
    .unwrap();
    deliver(
        &fake,
        &mut mos,
        &[new_data(FLOW, Side::Svr, 1), new_data(FLOW, Side::Svr, 2)],
    );
    // Each occurrence has its own budget.
    for got in results.borrow().iter() {
        assert_eq!(got.len(), MAX_RAISES + 10);
        assert!(got[..MAX_RAISES].iter().all(Result::is_ok));
        assert_eq!(got[MAX_RAISES..], vec![Err(Errno::EINVAL); 10]);
    }
    assert_eq!(results.borrow().len(), 2);
    assert_eq!(*fired.borrow(), 2 * MAX_RAISES);
    // The loop ended on its own, with the same number of rounds for each occurrence.
    let loops = loops.borrow().clone();
    let first = loops.iter().filter(|&&t| t == 1).count();
    let second = loops.iter().filter(|&&t| t == 2).count();
    assert!(first > 1 && first <= MAX_RAISES, "{first} rounds");
    assert_eq!(first, second);
    assert_eq!(loops.len(), first + second);
}

#[test]
fn an_attachment_makes_at_most_53_user_defined_events() {
    assert_eq!(MAX_USER_EVENTS, 53);
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let mut ids = Vec::new();
    let mut base = EventMask::CONN_START;
    for i in 0..MAX_USER_EVENTS {
        let id = if i % 2 == 0 {
            mos.define_event(base, |_, _| true).unwrap()
        } else {
            mos.alloc_event(base).unwrap()
        };
        ids.push(id.0);
        base = id;
    }
    let all = ids.iter().fold(0u64, |m, b| {
        assert_eq!(m & b, 0, "bit {b:#x} given twice");
        m | b
    });
    assert_eq!(all & EventMask::ALL.0, 0);
    assert_eq!(all.count_ones() as usize, MAX_USER_EVENTS);
    let e = mos.alloc_event(EventMask::CONN_START).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOMEM, "{e}");
    let e = mos
        .define_event(EventMask::CONN_START, |_, _| true)
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ENOMEM, "{e}");
    // The last one of the chain still works as an event, rooted at CONN_START.
    mos.register_callback(s, base, Hook::Null, |_, _| {})
        .unwrap();
    assert_eq!(
        subscribed(&fake, s),
        EventMask::CONN_START.0 | EventMask::CONN_END.0
    );
}

#[test]
fn registering_on_an_event_nobody_made_is_einval() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    for bad in [
        EventMask(1 << 11),
        EventMask(1 << 40),
        EventMask(EventMask::CONN_START.0 | 1 << 20),
        // Bits 1 and 3 name no built-in event.
        EventMask(1 << 1),
        EventMask(1 << 3),
    ] {
        let e = mos
            .register_callback(s, bad, Hook::Null, |_, _| {})
            .unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL, "{bad:?}: {e}");
        let e = mos.define_event(bad, |_, _| true).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL, "{bad:?}: {e}");
        let e = mos.alloc_event(bad).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL, "{bad:?}: {e}");
    }
    assert_eq!(subscribed(&fake, s), 0);
    // Once made, bit 11 is an event like the others.
    let u = mos.define_event(EventMask::PKT_IN, |_, _| true).unwrap();
    assert_eq!(u, EventMask(1 << 11));
    mos.register_callback(s, u, Hook::Null, |_, _| {}).unwrap();
    assert_eq!(
        subscribed(&fake, s),
        EventMask::PKT_IN.0 | EventMask::CONN_END.0
    );
}

/// A registration on one flow, made from a callback, is checked like any other: an event
/// that is neither built in nor made by `define_event`/`alloc_event` is `EINVAL`.
#[test]
fn a_per_flow_registration_on_an_event_nobody_made_is_einval() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let made = mos.alloc_event(EventMask::CONN_NEW_DATA).unwrap();
    let results = log();
    let r = results.clone();
    mos.register_callback(s, EventMask::CONN_START, Hook::Null, move |ctx, ev| {
        let flow = ev.flow.unwrap();
        for events in [made, EventMask(1 << 40), EventMask(1 << 3)] {
            let got = ctx.register_flow_callback(s, flow, events, Hook::Null, |_, _| {});
            r.borrow_mut().push(got.map_err(|e| e.errno()));
        }
    })
    .unwrap();
    deliver(&fake, &mut mos, &[conn_start(FLOW)]);
    assert_eq!(
        results.borrow().clone(),
        vec![Ok(()), Err(Errno::EINVAL), Err(Errno::EINVAL)]
    );
}

#[test]
fn the_sensor_is_asked_for_the_built_in_event_at_the_root_of_a_chain() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let idle = mos.socket().unwrap();
    let to_established = mos
        .define_event(EventMask::TCP_STATE_CHANGE, |_, ev| {
            matches!(
                ev.kind,
                EventKind::StateChange {
                    new: TcpState::Established,
                    ..
                }
            )
        })
        .unwrap();
    let raised = mos.alloc_event(to_established).unwrap();
    let client_side = mos
        .define_event(to_established, move |ctx, ev| {
            ctx.raise_event(raised).unwrap();
            ev.side == Some(Side::Cli)
        })
        .unwrap();
    let fired = log();
    for id in [client_side, raised] {
        let f = fired.clone();
        mos.register_callback(s, id, Hook::Null, move |_, ev| {
            f.borrow_mut().push((ev.id, ev.side))
        })
        .unwrap();
    }
    assert_eq!(
        subscribed(&fake, s),
        EventMask::TCP_STATE_CHANGE.0 | EventMask::CONN_END.0
    );
    assert_eq!(subscribed(&fake, idle), 0);
    let change = |side, new: TcpState| EventRecord {
        aux0: TcpState::SynSent.code(),
        aux1: new.code(),
        ..rec(FLOW, event_kind::TCP_STATE_CHANGE, side, EVERY_SOCK)
    };
    deliver(
        &fake,
        &mut mos,
        &[
            change(Side::Cli, TcpState::Established),
            change(Side::Svr, TcpState::Established),
            change(Side::Cli, TcpState::Closed),
        ],
    );
    // The last link raised `raised` both times it ran, and passed for the client only.
    assert_eq!(
        fired.borrow().clone(),
        vec![
            (raised, Some(Side::Cli)),
            (client_side, Some(Side::Cli)),
            (raised, Some(Side::Svr)),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Timers

#[test]
fn timers_fire_once_in_due_order_inside_run_for_with_their_ids() {
    let fake = fake();
    let mut mos = attach(&fake);
    let fired = log();
    let t0 = Instant::now();
    let delays = [(1, 60), (2, 20), (3, 40)];
    for (id, ms) in delays {
        let f = fired.clone();
        mos.settimer(id, Duration::from_millis(ms), move |_, got| {
            f.borrow_mut().push((id, got, t0.elapsed()))
        });
    }
    assert_eq!(
        mos.run_for(Duration::from_millis(300)).unwrap(),
        RunEnd::Elapsed
    );
    let got = fired.borrow().clone();
    assert_eq!(
        got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        vec![(2, 2), (3, 3), (1, 1)]
    );
    for (id, ms) in delays {
        let at = got.iter().find(|f| f.0 == id).unwrap().2;
        assert!(at >= Duration::from_millis(ms), "timer {id}: {got:?}");
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        mos.run_for(Duration::from_millis(50)).unwrap(),
        RunEnd::Elapsed
    );
    assert_eq!(fired.borrow().len(), 3, "a timer fired twice");
}

#[test]
fn a_callback_sets_timers_through_its_context() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let fired = log();
    let set_at = Rc::new(RefCell::new(None));
    let (f, at) = (fired.clone(), set_at.clone());
    mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, ev| {
        *at.borrow_mut() = Some(Instant::now());
        let tail = ev.tail;
        let f = f.clone();
        ctx.settimer(7, Duration::from_millis(30), move |ctx, id| {
            f.borrow_mut().push((id, tail, Instant::now()));
            // A timer may set the next one.
            let f = f.clone();
            ctx.settimer(8, Duration::from_millis(10), move |_, id| {
                f.borrow_mut().push((id, tail, Instant::now()))
            });
        });
    })
    .unwrap();
    deliver(&fake, &mut mos, &[new_data(FLOW, Side::Svr, 4)]);
    assert!(fired.borrow().is_empty(), "fired before its time");
    assert_eq!(
        mos.run_for(Duration::from_millis(300)).unwrap(),
        RunEnd::Elapsed
    );
    let got = fired.borrow().clone();
    assert_eq!(
        got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        vec![(7, 4), (8, 4)]
    );
    let set = set_at.borrow().unwrap();
    assert!(got[0].2 - set >= Duration::from_millis(30), "{got:?}");
    assert!(got[1].2 - got[0].2 >= Duration::from_millis(10), "{got:?}");
}

#[test]
fn capture_clock_timers_fire_when_event_time_passes_their_due_time() {
    let fake = fake();
    let mut mos = attach_on(&fake, TimerClock::Capture);
    let s = mos.socket().unwrap();
    let fired = log();
    let f = fired.clone();
    mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, ev| {
        if ev.ts_ns == T0 {
            assert_eq!(ctx.timer_now_ns(), T0);
            let f = f.clone();
            ctx.settimer(5, Duration::from_millis(50), move |ctx, id| {
                f.borrow_mut().push((id, ctx.timer_now_ns()))
            });
        }
    })
    .unwrap();
    let at = |ms: u64| EventRecord {
        ts_ns: T0 + ms * 1_000_000,
        ..new_data(FLOW, Side::Svr, ms)
    };
    deliver(&fake, &mut mos, &[at(0)]);
    deliver(&fake, &mut mos, &[at(49)]);
    // More wall time than the delay passes with no event: capture time stands still.
    assert_eq!(
        mos.run_for(Duration::from_millis(120)).unwrap(),
        RunEnd::Elapsed
    );
    assert!(fired.borrow().is_empty(), "{:?}", fired.borrow());
    deliver(&fake, &mut mos, &[at(50)]);
    assert_eq!(
        mos.run_for(Duration::from_millis(20)).unwrap(),
        RunEnd::Elapsed
    );
    assert_eq!(fired.borrow().clone(), vec![(5, T0 + 50_000_000)]);
}

/// In a replay the sensor reads ahead of the analyzer by up to an event ring's worth, and its
/// published clock (the newest frame it read) with it. A timer set while an event is handled
/// is still due its delay after that event, and fires once the dispatched events pass it.
#[test]
fn capture_clock_timers_count_from_the_event_handled_not_the_sensors_clock_ahead() {
    let fake = fake();
    let mut mos = attach_on(&fake, TimerClock::Capture);
    let s = mos.socket().unwrap();
    let set_at = log();
    let fired = log();
    let (st, f) = (set_at.clone(), fired.clone());
    mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, ev| {
        if ev.ts_ns == T0 {
            st.borrow_mut().push(ctx.timer_now_ns());
            let f = f.clone();
            ctx.settimer(9, Duration::from_millis(50), move |_, id| {
                f.borrow_mut().push(id)
            });
        }
    })
    .unwrap();
    // The sensor has read 10 s of capture further than the events it published so far.
    fake.main
        .header()
        .clock_ns
        .store(T0 + 10_000_000_000, std::sync::atomic::Ordering::Relaxed);
    let at = |ms: u64| EventRecord {
        ts_ns: T0 + ms * 1_000_000,
        ..new_data(FLOW, Side::Svr, ms + 1)
    };
    for e in [at(0), at(1000)] {
        assert!(fake.push_event(W, e));
    }
    assert_eq!(
        mos.run_for(Duration::from_millis(30)).unwrap(),
        RunEnd::Elapsed
    );
    assert_eq!(
        set_at.borrow().clone(),
        vec![T0],
        "the clock in the callback"
    );
    assert_eq!(fired.borrow().clone(), vec![9]);
}

// ---------------------------------------------------------------------------------------------
// User contexts

/// A user context that says when it is dropped.
struct Noted {
    reads: u32,
    log: Log<String>,
}

impl Drop for Noted {
    fn drop(&mut self) {
        self.log
            .borrow_mut()
            .push(format!("dropped after {}", self.reads));
    }
}

#[test]
fn a_user_context_lives_from_set_to_the_flows_last_conn_end_on_its_own_socket() {
    let fake = fake();
    let mut mos = attach(&fake);
    let a = mos.socket().unwrap();
    let b = mos.socket().unwrap();
    let notes: Log<String> = log();
    let n = notes.clone();
    mos.register_callback(a, EventMask::CONN_START, Hook::Null, move |ctx, ev| {
        let value = Noted {
            reads: 0,
            log: n.clone(),
        };
        ctx.set_uctx(a, ev.flow.unwrap(), value).unwrap();
    })
    .unwrap();
    mos.register_callback(b, EventMask::CONN_START, Hook::Null, move |ctx, ev| {
        ctx.set_uctx(b, ev.flow.unwrap(), 100u32).unwrap();
    })
    .unwrap();
    let n = notes.clone();
    mos.register_callback(
        a,
        EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        Hook::Null,
        move |ctx, ev| {
            let flow = ev.flow.unwrap();
            assert!(ctx.uctx::<u32>(a, flow).is_none(), "another type");
            let what = match ev.kind {
                EventKind::ConnEnd { .. } => "end",
                _ => "data",
            };
            let note = match ctx.uctx::<Noted>(a, flow) {
                Some(v) => {
                    v.reads += 1;
                    format!("{what} {flow}: read {}", v.reads)
                }
                None => format!("{what} {flow}: none"),
            };
            n.borrow_mut().push(note);
        },
    )
    .unwrap();
    mos.register_callback(b, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, ev| {
        assert!(ctx.uctx::<Noted>(b, ev.flow.unwrap()).is_none());
        if let Some(v) = ctx.uctx::<u32>(b, ev.flow.unwrap()) {
            *v += 1;
        }
    })
    .unwrap();
    deliver(
        &fake,
        &mut mos,
        &[
            conn_start(FLOW),
            new_data(FLOW, Side::Svr, 3),
            new_data(OTHER, Side::Svr, 3),
            new_data(FLOW, Side::Cli, 5),
            conn_end(FLOW, Side::Cli),
        ],
    );
    let reads = |mos: &mut Mos| mos.with_ctx(|c| c.uctx::<Noted>(a, FLOW).map(|v| v.reads));
    assert_eq!(reads(&mut mos), Some(3));
    assert_eq!(mos.with_ctx(|c| c.uctx::<u32>(b, FLOW).copied()), Some(102));
    assert_eq!(mos.with_ctx(|c| c.uctx::<u32>(b, OTHER).copied()), None);
    deliver(&fake, &mut mos, &[conn_end(FLOW, Side::Svr)]);
    assert_eq!(reads(&mut mos), None);
    assert_eq!(mos.with_ctx(|c| c.uctx::<u32>(b, FLOW).copied()), None);
    assert_eq!(
        notes.borrow().clone(),
        vec![
            format!("data {FLOW}: read 1"),
            format!("data {OTHER}: none"),
            format!("data {FLOW}: read 2"),
            format!("end {FLOW}: read 3"),
            format!("end {FLOW}: read 4"),
            "dropped after 4".to_string(),
        ]
    );
    // Taken back, a context is the caller's: the library drops nothing more.
    deliver(&fake, &mut mos, &[conn_start(OTHER)]);
    let taken = mos.with_ctx(|c| {
        assert!(c.take_uctx::<u32>(a, OTHER).is_none(), "another type");
        c.take_uctx::<Noted>(a, OTHER)
    });
    assert_eq!(taken.as_ref().map(|v| v.reads), Some(0));
    assert_eq!(reads(&mut mos), None);
    deliver(
        &fake,
        &mut mos,
        &[conn_end(OTHER, Side::Cli), conn_end(OTHER, Side::Svr)],
    );
    assert_eq!(
        notes.borrow().last().unwrap(),
        &format!("end {OTHER}: none")
    );
    drop(taken);
    assert_eq!(notes.borrow().last().unwrap(), "dropped after 0");
}

// ---------------------------------------------------------------------------------------------
// STOP_MON

#[test]
fn stop_monitoring_a_side_silences_it_for_that_socket_and_both_sides_tell_the_sensor_once() {
    let fake = fake();
    let mut mos = attach(&fake);
    let stopper = mos.socket().unwrap();
    let watcher = mos.socket().unwrap();
    let seen = log();
    let f = seen.clone();
    mos.register_callback(
        stopper,
        EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        Hook::Null,
        move |ctx, ev| {
            let flow = ev.flow.unwrap();
            f.borrow_mut()
                .push(('s', flow.slot, ev.side.unwrap(), ev.tail));
            if flow == FLOW && ev.tail == 1 {
                let which = match ev.side.unwrap() {
                    Side::Cli => MOS_SIDE_CLI,
                    Side::Svr => MOS_SIDE_SVR,
                };
                ctx.stop_monitoring(stopper, flow, which).unwrap();
            }
        },
    )
    .unwrap();
    let f = seen.clone();
    mos.register_callback(
        watcher,
        EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        Hook::Null,
        move |_, ev| {
            f.borrow_mut()
                .push(('w', ev.flow.unwrap().slot, ev.side.unwrap(), ev.tail))
        },
    )
    .unwrap();
    let e = mos
        .with_ctx(|c| c.stop_monitoring(stopper, FLOW, 3))
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    // The client's side is stopped on its first event; the server's still flows.
    deliver(
        &fake,
        &mut mos,
        &[
            new_data(FLOW, Side::Cli, 1),
            new_data(FLOW, Side::Cli, 2),
            new_data(FLOW, Side::Svr, 2),
            new_data(OTHER, Side::Cli, 1),
        ],
    );
    let take = |seen: &Log<(char, u32, Side, u64)>| std::mem::take(&mut *seen.borrow_mut());
    assert_eq!(
        take(&seen),
        vec![
            ('s', 3, Side::Cli, 1),
            ('w', 3, Side::Cli, 1),
            ('w', 3, Side::Cli, 2),
            ('s', 3, Side::Svr, 2),
            ('w', 3, Side::Svr, 2),
            ('s', 4, Side::Cli, 1),
            ('w', 4, Side::Cli, 1),
        ]
    );
    assert!(fake.log().stop_mons.is_empty(), "one side is not the flow");
    // Now the server's side too: the sensor is told, once.
    deliver(&fake, &mut mos, &[new_data(FLOW, Side::Svr, 1)]);
    wait_for("StopMon", || !fake.log().stop_mons.is_empty());
    deliver(
        &fake,
        &mut mos,
        &[
            new_data(FLOW, Side::Cli, 3),
            new_data(FLOW, Side::Svr, 3),
            new_data(OTHER, Side::Svr, 2),
            conn_end(FLOW, Side::Cli),
            conn_end(FLOW, Side::Svr),
        ],
    );
    mos.with_ctx(|c| c.stop_monitoring(stopper, OTHER, MOS_SIDE_CLI))
        .unwrap();
    assert_eq!(
        take(&seen),
        vec![
            ('s', 3, Side::Svr, 1),
            ('w', 3, Side::Svr, 1),
            ('w', 3, Side::Cli, 3),
            ('w', 3, Side::Svr, 3),
            ('s', 4, Side::Svr, 2),
            ('w', 4, Side::Svr, 2),
            ('w', 3, Side::Cli, 0),
            ('w', 3, Side::Svr, 0),
        ]
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        fake.log().stop_mons,
        vec![(stopper.0 as u8, 0, FLOW.slot, FLOW.generation)]
    );
}

// ---------------------------------------------------------------------------------------------
// Per-flow registration

#[test]
fn a_per_flow_registration_serves_only_its_flow_and_goes_with_its_end() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let seen = log();
    let f = seen.clone();
    mos.register_callback(s, EventMask::CONN_START, Hook::Null, move |ctx, ev| {
        let flow = ev.flow.unwrap();
        if flow == FLOW {
            let f = f.clone();
            ctx.register_flow_callback(
                s,
                flow,
                EventMask::CONN_NEW_DATA,
                Hook::Null,
                move |_, ev| f.borrow_mut().push((ev.flow.unwrap(), ev.tail)),
            )
            .unwrap();
        }
    })
    .unwrap();
    let base = EventMask::CONN_START.0 | EventMask::CONN_END.0;
    assert_eq!(subscribed(&fake, s), base);
    deliver(&fake, &mut mos, &[conn_start(OTHER)]);
    assert_eq!(subscribed(&fake, s), base);
    deliver(
        &fake,
        &mut mos,
        &[
            conn_start(FLOW),
            new_data(FLOW, Side::Svr, 1),
            new_data(OTHER, Side::Svr, 2),
            new_data(FLOW, Side::Cli, 3),
        ],
    );
    assert_eq!(subscribed(&fake, s), base | EventMask::CONN_NEW_DATA.0);
    assert_eq!(seen.borrow().clone(), vec![(FLOW, 1), (FLOW, 3)]);
    // The client's CONN_END is not the flow's end; the server's is.
    deliver(&fake, &mut mos, &[conn_end(FLOW, Side::Cli)]);
    deliver(&fake, &mut mos, &[new_data(FLOW, Side::Svr, 4)]);
    assert_eq!(subscribed(&fake, s), base | EventMask::CONN_NEW_DATA.0);
    deliver(&fake, &mut mos, &[conn_end(FLOW, Side::Svr)]);
    assert_eq!(subscribed(&fake, s), base);
    // An event the sensor had already published for the old flow finds no callback.
    deliver(&fake, &mut mos, &[new_data(FLOW, Side::Svr, 5)]);
    assert_eq!(seen.borrow().clone(), vec![(FLOW, 1), (FLOW, 3), (FLOW, 4)]);
}

// ---------------------------------------------------------------------------------------------
// Event-bounded peek

fn stream(range: std::ops::Range<u8>) -> Vec<u8> {
    range.map(|b| b.wrapping_mul(13).wrapping_add(1)).collect()
}

#[test]
fn peek_in_a_callback_stops_at_the_events_tail_and_peek_newest_does_not() {
    let fake = fake();
    let mut mos = attach(&fake);
    publish(&fake, FLOW, 1, &stream(0..25));
    let bounded = mos.socket().unwrap();
    let newest = mos.socket().unwrap();
    let got = log();
    let g = got.clone();
    mos.register_callback(
        bounded,
        EventMask::CONN_NEW_DATA,
        Hook::Null,
        move |ctx, ev| {
            let flow = ev.flow.unwrap();
            let side = ev.side.unwrap();
            // Small reads, so that the bound cuts one of them short.
            let (mut bytes, mut buf) = (Vec::new(), [0u8; 4]);
            while let Peek::Data(n) = ctx.peek(bounded, flow, side, &mut buf).unwrap() {
                bytes.extend_from_slice(&buf[..n]);
            }
            let at = ctx.peek_offset(bounded, flow, side).unwrap();
            // ppeek is bounded the same way for bytes in order.
            let mut big = [0u8; 64];
            let pp = ctx.ppeek(bounded, flow, side, &mut big, 5).unwrap();
            g.borrow_mut().push(('b', ev.tail, bytes, at, pp));
        },
    )
    .unwrap();
    let g = got.clone();
    mos.register_callback(
        newest,
        EventMask::CONN_NEW_DATA,
        Hook::Null,
        move |ctx, ev| {
            let flow = ev.flow.unwrap();
            let side = ev.side.unwrap();
            let (mut bytes, mut buf) = (Vec::new(), [0u8; 64]);
            while let Peek::Data(n) = ctx.peek_newest(newest, flow, side, &mut buf).unwrap() {
                bytes.extend_from_slice(&buf[..n]);
            }
            let at = ctx.peek_offset(newest, flow, side).unwrap();
            g.borrow_mut().push(('n', ev.tail, bytes, at, 0));
        },
    )
    .unwrap();
    deliver(
        &fake,
        &mut mos,
        &[new_data(FLOW, Side::Svr, 10), new_data(FLOW, Side::Svr, 25)],
    );
    assert_eq!(
        got.borrow().clone(),
        vec![
            ('b', 10, stream(0..10), 10, 5),
            ('n', 10, stream(0..25), 25, 0),
            ('b', 25, stream(10..25), 25, 20),
            ('n', 25, Vec::new(), 25, 0),
        ]
    );
    // Outside a callback, peek reads to the newest byte.
    publish(&fake, FLOW, 1, &stream(0..40));
    let mut buf = [0u8; 64];
    let n = mos.with_ctx(|c| c.peek(bounded, FLOW, Side::Svr, &mut buf).unwrap());
    assert_eq!(n, Peek::Data(15));
    assert_eq!(buf[..15].to_vec(), stream(25..40));
}

// ---------------------------------------------------------------------------------------------
// Addressing and the loop

#[test]
fn an_event_goes_only_to_the_sockets_its_socks_bits_name() {
    let fake = fake();
    let mut mos = attach(&fake);
    let seen = log();
    let socks: Vec<SockId> = (0..3).map(|_| mos.socket().unwrap()).collect();
    for &s in &socks {
        let f = seen.clone();
        mos.register_callback(s, EventMask::CONN_START, Hook::Null, move |_, ev| {
            f.borrow_mut().push((s.0, ev.record.socks))
        })
        .unwrap();
    }
    let to = |socks| EventRecord {
        socks,
        ..conn_start(FLOW)
    };
    deliver(&fake, &mut mos, &[to(1 << 1)]);
    assert_eq!(seen.borrow().clone(), vec![(1, 0b10)]);
    seen.borrow_mut().clear();
    deliver(&fake, &mut mos, &[to(0b101), to(0), to(1 << 5)]);
    assert_eq!(seen.borrow().clone(), vec![(0, 0b101), (2, 0b101)]);
    // A closed socket's id is reused by the next one, with nothing of the old one's.
    seen.borrow_mut().clear();
    mos.close(socks[1]).unwrap();
    let again = mos.socket().unwrap();
    assert_eq!(again, socks[1]);
    deliver(&fake, &mut mos, &[to(0b10)]);
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
}

#[test]
fn run_for_and_poll_return_elapsed_and_wait_sees_a_pushed_event() {
    let fake = fake();
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let calls = Rc::new(RefCell::new(0));
    let c = calls.clone();
    mos.register_callback(s, EventMask::CONN_START, Hook::Null, move |_, _| {
        *c.borrow_mut() += 1
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(
        mos.run_for(Duration::from_millis(50)).unwrap(),
        RunEnd::Elapsed
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let t = Instant::now();
    assert_eq!(mos.poll().unwrap(), RunEnd::Elapsed);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert!(!mos.wait(Duration::from_millis(30)));
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "{:?}",
        t.elapsed()
    );
    // An event pushed (and woken for, as a worker does) while the analyzer waits.
    let t = Instant::now();
    let woke = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            assert!(fake.push_event(W, conn_start(FLOW)));
            shm_layout::wake::wake(&fake.page().waiting);
        });
        mos.wait(Duration::from_secs(10))
    });
    assert!(woke);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(*calls.borrow(), 0, "wait dispatches nothing");
    assert_eq!(mos.poll().unwrap(), RunEnd::Elapsed);
    assert_eq!(*calls.borrow(), 1);
    assert!(!mos.wait(Duration::from_millis(10)));
}
