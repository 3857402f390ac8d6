//! criterion benches of the hot paths, over real shared-memory regions.
//!
//! * `send_poll/<size>`: `send` + `poll_into` in one thread, 8 B … 1 MiB;
//! * `send_poll_with/<size>` and `loan_poll_with/<size>`: the zero-copy paths;
//! * `send_batch/<n>`: `send_batch` of n 64-byte records, then drain;
//! * `two_threads/64`: a producer thread and a consumer thread on one
//!   backpressure topic (`iter_custom` with a `Barrier`, timed until the
//!   consumer has every record);
//! * `cross_process/rtt_64`: round trip to a child process (this bench binary
//!   re-executed in an echo role) over two topics, busy-polling.
//!
//! The configuration is short (`measurement_time` 0.8 s): the whole suite runs
//! in well under a minute. `shmq bench` is the tool for figures compared with
//! their hardware floors; these benches track regressions of each path.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use shmq::{Consumer, Overflow, Producer, RecordBuf, SeekPolicy, Topic, TopicConfig, TopicManager};

/// Environment variable that turns this binary into the cross-process echo.
const CHILD_NS_ENV: &str = "SHMQ_CRITERION_CHILD_NS";

const SIZES: [usize; 6] = [8, 64, 512, 4096, 65536, 1 << 20];

fn namespace() -> String {
    format!("cb{}", std::process::id())
}

/// The benches' manager; taken out (and dropped, removing its liveness token
/// file) at the end of `main`.
static MGR: std::sync::Mutex<Option<TopicManager>> = std::sync::Mutex::new(None);

fn manager() -> TopicManager {
    MGR.lock()
        .unwrap()
        .get_or_insert_with(|| TopicManager::with_namespace(&namespace()).expect("bench namespace"))
        .clone()
}

fn fresh_topic(name: &str, slots: u64, size: usize, overflow: Overflow) -> Topic {
    let mgr = manager();
    let _ = mgr.delete(name);
    mgr.create(
        name,
        TopicConfig::default()
            .partitions(1)
            .slots(slots)
            .slot_size(size as u64)
            .overflow(overflow),
    )
    .expect("create bench topic")
}

fn slots_for(size: usize) -> u64 {
    // Keep each ring at most a few MiB.
    ((4 << 20) / size.max(64)).clamp(8, 1024) as u64
}

fn send_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_poll");
    for size in SIZES {
        let topic = fresh_topic("sp", slots_for(size), size, Overflow::Overwrite);
        let mut p = Producer::new(&topic).unwrap();
        let mut cons = Consumer::new(&topic, "b").unwrap();
        cons.seek(SeekPolicy::Latest).unwrap();
        let msg = vec![0x5au8; size];
        let mut buf = RecordBuf::default();
        // Sanity check before timing: what goes in comes out.
        p.send(&msg).unwrap();
        cons.poll_into(&mut buf).unwrap().expect("record");
        assert_eq!(buf.value(), &msg[..]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                p.send(black_box(&msg)).unwrap();
                black_box(cons.poll_into(&mut buf).unwrap());
            })
        });
    }
    g.finish();
}

fn zero_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_poll_with");
    for size in SIZES {
        let topic = fresh_topic("zc", slots_for(size), size, Overflow::Overwrite);
        let mut p = Producer::new(&topic).unwrap();
        let mut cons = Consumer::new(&topic, "b").unwrap();
        cons.seek(SeekPolicy::Latest).unwrap();
        let msg = vec![0x5au8; size];
        p.send(&msg).unwrap();
        let v = cons.poll_with(|r| r.value == &msg[..]).unwrap().unwrap();
        assert!(v.output && !v.lapped);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                p.send(black_box(&msg)).unwrap();
                black_box(cons.poll_with(|r| r.value[r.value.len() - 1]).unwrap());
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("loan_poll_with");
    for size in SIZES {
        let topic = fresh_topic("ln", slots_for(size), size, Overflow::Overwrite);
        let mut p = Producer::new(&topic).unwrap();
        let mut cons = Consumer::new(&topic, "b").unwrap();
        cons.seek(SeekPolicy::Latest).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                // Fill only the ends: the point is that nothing is copied.
                let mut loan = p.loan(size).unwrap();
                loan[0] = 1;
                loan[size - 1] = 2;
                loan.commit().unwrap();
                black_box(cons.poll_with(|r| r.value[r.value.len() - 1]).unwrap());
            })
        });
    }
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_batch");
    let topic = fresh_topic("sb", 1024, 64, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut cons = Consumer::new(&topic, "b").unwrap();
    cons.seek(SeekPolicy::Latest).unwrap();
    let msg = [7u8; 64];
    let mut buf = RecordBuf::default();
    for n in [1usize, 8, 64, 256] {
        let batch: Vec<&[u8]> = vec![&msg[..]; n];
        p.send_batch(&batch).unwrap();
        let mut got = 0;
        while cons.poll_into(&mut buf).unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                p.send_batch(black_box(&batch)).unwrap();
                while cons.poll_into(&mut buf).unwrap().is_some() {}
            })
        });
    }
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    g.throughput(Throughput::Elements(1));
    let topic = fresh_topic("tt", 4096, 64, Overflow::Backpressure);
    g.bench_function("64", |b| {
        b.iter_custom(|iters| {
            let mut cons = Consumer::new(&topic, "b").unwrap();
            cons.seek(SeekPolicy::Latest).unwrap();
            let start = cons.position(0).unwrap();
            let barrier = Arc::new(Barrier::new(2));
            let t = topic.clone();
            let b2 = barrier.clone();
            let producer = std::thread::spawn(move || {
                let mut p = Producer::new(&t).unwrap();
                let mut msg = [0u8; 64];
                b2.wait();
                for i in 0..iters {
                    msg[..8].copy_from_slice(&i.to_le_bytes());
                    p.send(&msg).unwrap();
                }
            });
            let mut buf = RecordBuf::default();
            barrier.wait();
            let t0 = Instant::now();
            let mut got = 0u64;
            while got < iters {
                if let Some(d) = cons.poll_into(&mut buf).unwrap() {
                    debug_assert_eq!(d.offset, start + got);
                    got += 1;
                    if got % 512 == 0 {
                        cons.commit().unwrap();
                    }
                } else {
                    std::hint::spin_loop();
                }
            }
            let elapsed = t0.elapsed();
            cons.commit().unwrap();
            producer.join().unwrap();
            assert_eq!(cons.missed(), 0);
            elapsed
        })
    });
    g.finish();
}

/// The echo child of `cross_process`, and how the parent drives it.
struct Echo {
    child: Child,
    ping: Producer,
    pong: Consumer,
}

impl Echo {
    fn start() -> Echo {
        let ping = fresh_topic("xping", 256, 64, Overflow::Overwrite);
        let pong = fresh_topic("xpong", 256, 64, Overflow::Overwrite);
        let mut pong = Consumer::new(&pong, "b").unwrap();
        pong.seek(SeekPolicy::Latest).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_NS_ENV, namespace())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the echo child");
        Echo {
            child,
            ping: Producer::new(&ping).unwrap(),
            pong,
        }
    }

    fn round_trip(&mut self, msg: &[u8], buf: &mut RecordBuf) {
        self.ping.send(msg).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.pong.poll_into(buf).unwrap().is_some() {
                return;
            }
            // The first round trips wait for the child to start.
            if Instant::now() > deadline {
                panic!("echo child did not answer");
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // A one-byte ping tells the child to exit.
        let _ = self.ping.send(&[0]);
        let _ = self.child.wait();
    }
}

fn child_echo(ns: &str) {
    let mgr = TopicManager::with_namespace(ns).unwrap();
    let ping = mgr.open("xping").unwrap();
    let pong = mgr.open("xpong").unwrap();
    let mut c = Consumer::new(&ping, "echo").unwrap();
    c.seek(SeekPolicy::Earliest).unwrap();
    let mut p = Producer::new(&pong).unwrap();
    let mut buf = RecordBuf::default();
    loop {
        if c.poll_into(&mut buf).unwrap().is_none() {
            std::hint::spin_loop();
            continue;
        }
        if buf.value().len() == 1 {
            return;
        }
        p.send(buf.value()).unwrap();
    }
}

fn cross_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_process");
    let mut echo = Echo::start();
    let mut msg = [0u8; 64];
    let mut buf = RecordBuf::default();
    // Sanity check: the child echoes exactly what was sent.
    for i in 0..100u64 {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        echo.round_trip(&msg, &mut buf);
        assert_eq!(buf.value(), &msg[..]);
    }
    g.bench_function("rtt_64", |b| {
        b.iter(|| echo.round_trip(black_box(&msg), &mut buf))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_millis(800))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    targets = send_poll, zero_copy, batches, two_threads, cross_process
}

fn main() {
    if let Ok(ns) = std::env::var(CHILD_NS_ENV) {
        child_echo(&ns);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Delete what the benches created and leave nothing in /dev/shm.
    if let Some(mgr) = MGR.lock().unwrap().take() {
        for t in mgr.list().unwrap_or_default() {
            let _ = mgr.delete(&t);
        }
    }
}
