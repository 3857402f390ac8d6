//! The adaptive backoff (`WaitStrategy::Backoff`, the default, and
//! `WaitStrategy::Adaptive`) seen through its counters, never through
//! timing: a zero budget parks without spinning, the default spins before it
//! parks, and the learned gap survives from one receive to the next. The
//! arithmetic of the gap and the CPU budget is unit-tested in `src/wait.rs`
//! (`cargo test --lib wait`).

mod common;

use std::time::Duration;

use common::ShmGuard;
use shmq::{Adaptive, Consumer, Producer, Topic, TopicConfig, TopicManager, WaitStrategy};

struct Fx {
    mgr: Option<TopicManager>,
    guard: ShmGuard,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        let guard = ShmGuard::new(&format!("aw{tag}"));
        Fx {
            mgr: Some(guard.manager()),
            guard,
        }
    }
    fn topic(&self) -> Topic {
        let config = TopicConfig::default().partitions(1).slots(64).slot_size(64);
        self.mgr.as_ref().unwrap().create("t", config).unwrap()
    }
    fn finish(mut self) {
        let mgr = self.mgr.take().unwrap();
        assert!(mgr.delete("t").unwrap());
        drop(mgr);
        self.guard.finish();
    }
}

/// Send `value` from another thread after `delay`.
fn send_later(topic: &Topic, delay: Duration, value: &'static [u8]) -> std::thread::JoinHandle<()> {
    let topic = topic.clone();
    std::thread::spawn(move || {
        let mut p = Producer::new(&topic).unwrap();
        std::thread::sleep(delay);
        p.send(value).unwrap();
    })
}

#[test]
fn the_default_strategy_is_the_adaptive_backoff() {
    assert_eq!(WaitStrategy::default(), WaitStrategy::Backoff);
    let a = Adaptive::default();
    assert_eq!(a.max_spin, Duration::from_micros(100));
    assert_eq!(a.cpu_percent, 100);
}

#[test]
fn a_zero_budget_parks_without_spinning() {
    let fx = Fx::new("zero");
    let topic = fx.topic();
    let zero = Adaptive {
        max_spin: Duration::ZERO,
        min_spin: Duration::ZERO,
        yields: 0,
        cpu_percent: 0,
    };
    let mut c = Consumer::new(&topic, "g")
        .unwrap()
        .with_wait_strategy(WaitStrategy::Adaptive(zero));
    let t = send_later(&topic, Duration::from_millis(50), b"late");
    let r = c.recv_timeout(Duration::from_secs(10)).unwrap();
    t.join().unwrap();
    assert_eq!(r.value, b"late");
    let w = c.wait_counters();
    assert_eq!(w.waits, 1, "{w:?}");
    assert_eq!((w.spins, w.yields), (0, 0), "{w:?}");
    assert!(w.parks >= 1, "{w:?}");
    drop((c, topic));
    fx.finish();
}

#[test]
fn the_default_spins_first_and_keeps_its_memory_between_receives() {
    let fx = Fx::new("dflt");
    let topic = fx.topic();
    let mut c = Consumer::new(&topic, "g").unwrap();
    let t = send_later(&topic, Duration::from_millis(20), b"a");
    assert_eq!(c.recv_timeout(Duration::from_secs(10)).unwrap().value, b"a");
    t.join().unwrap();
    let first = c.wait_counters();
    assert_eq!(first.waits, 1, "{first:?}");
    assert!(
        first.spins >= 1,
        "the default parked without spinning: {first:?}"
    );
    // The counters (and the learned gap) carry over to the next receive.
    let t = send_later(&topic, Duration::from_millis(20), b"b");
    assert_eq!(c.recv_timeout(Duration::from_secs(10)).unwrap().value, b"b");
    t.join().unwrap();
    let second = c.wait_counters();
    assert_eq!(second.waits, 2, "{second:?}");
    assert!(second.spins > first.spins, "{second:?}");
    // A record already there is taken without any wait.
    let mut p = Producer::new(&topic).unwrap();
    p.send(b"c").unwrap();
    assert_eq!(c.recv_timeout(Duration::from_secs(10)).unwrap().value, b"c");
    assert_eq!(c.wait_counters().waits, 2);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn other_strategies_leave_the_backoff_counters_alone() {
    let fx = Fx::new("other");
    let topic = fx.topic();
    for strategy in [
        WaitStrategy::BusySpin,
        WaitStrategy::Yield,
        WaitStrategy::Park,
    ] {
        let mut c = Consumer::reader(&topic)
            .unwrap()
            .with_wait_strategy(strategy);
        c.seek(shmq::SeekPolicy::Latest).unwrap();
        let t = send_later(&topic, Duration::from_millis(10), b"x");
        assert_eq!(c.recv_timeout(Duration::from_secs(10)).unwrap().value, b"x");
        t.join().unwrap();
        assert_eq!(c.wait_counters(), Default::default(), "{strategy:?}");
    }
    drop(topic);
    fx.finish();
}
