//! The shmq side of the bench: the same experiments as the floors, through
//! real topics in the bench's private namespace, between two processes.

use std::time::{Duration, Instant};

use shmq::protocol::os::{cpu_time_ns, monotonic_ns};
use shmq::{
    Consumer, Overflow, Producer, RecordBatch, RecordBuf, SeekPolicy, Topic, TopicConfig,
    TopicManager, WaitStrategy,
};

use super::floors::Stream;
use super::harness::{field, go, report, wait_go, Cpus, Kid, Latency};
use super::ChildArgs;
use crate::error::{CliError, CliResult};

/// Group name every bench consumer uses.
const GROUP: &str = "bench";

fn topic(
    mgr: &TopicManager,
    name: &str,
    slots: u64,
    size: usize,
    overflow: Overflow,
) -> CliResult<Topic> {
    let config = TopicConfig::default()
        .partitions(1)
        .slots(slots)
        .slot_size(size.max(8) as u64)
        .overflow(overflow);
    let _ = mgr.delete(name);
    Ok(mgr.create(name, config)?)
}

/// How a latency ping-pong waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Spin on `poll_into` (busy-poll).
    Busy,
    /// `recv_into` with [`WaitStrategy::Park`]: sleep on the futex.
    Park,
    /// `recv_into` with [`WaitStrategy::Backoff`], the default: the adaptive
    /// backoff (spin while a record is expected soon, then yield, then park).
    Backoff,
}

impl Wait {
    fn as_str(self) -> &'static str {
        match self {
            Wait::Busy => "busy",
            Wait::Park => "park",
            Wait::Backoff => "backoff",
        }
    }

    fn strategy(self) -> WaitStrategy {
        match self {
            Wait::Busy => WaitStrategy::BusySpin,
            Wait::Park => WaitStrategy::Park,
            Wait::Backoff => WaitStrategy::Backoff,
        }
    }
}

/// Round trips through two topics (`ping` parent → child, `pong` back).
pub fn latency(
    mgr: &TopicManager,
    cpus: Cpus,
    wait: Wait,
    size: usize,
    warmup: u64,
    count: u64,
) -> CliResult<Latency> {
    let ping = topic(mgr, "lat-ping", 256, size, Overflow::Overwrite)?;
    let pong = topic(mgr, "lat-pong", 256, size, Overflow::Overwrite)?;
    let total = warmup + count;
    let mut producer = Producer::new(&ping)?;
    let mut consumer = Consumer::new(&pong, GROUP)?.with_wait_strategy(wait.strategy());
    consumer.seek(SeekPolicy::Latest)?;
    let mut kid = Kid::spawn(
        mgr.namespace(),
        "shmq-echo",
        cpus.child,
        &[
            "--count".into(),
            total.to_string(),
            "--size".into(),
            size.to_string(),
            "--wait".into(),
            wait.as_str().into(),
        ],
    )?;
    kid.expect("ready")?;
    let mut msg = vec![0u8; size.max(8)];
    let mut buf = RecordBuf::default();
    let mut samples = Vec::with_capacity(count as usize);
    let mut t = Instant::now();
    for i in 0..total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        producer.send(&msg)?;
        match wait {
            Wait::Busy => loop {
                if consumer.poll_into(&mut buf)?.is_some() {
                    break;
                }
                std::hint::spin_loop();
            },
            Wait::Park | Wait::Backoff => {
                consumer.recv_into(&mut buf, Some(Duration::from_secs(10)))?;
            }
        }
        let now = Instant::now();
        if buf.value().get(..8) != Some(&msg[..8]) {
            return Err(CliError::failed("shmq ping-pong echo mismatch"));
        }
        if i >= warmup {
            samples.push((now - t).as_nanos() as u64);
        }
        t = now;
    }
    kid.finish()?;
    drop((producer, consumer, ping, pong));
    mgr.delete("lat-ping")?;
    mgr.delete("lat-pong")?;
    Ok(Latency::from_samples(&mut samples))
}

/// Child side of [`latency`]: echo every ping as a pong.
pub fn echo(ns: &str, args: &ChildArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let ping = mgr.open("lat-ping")?;
    let pong = mgr.open("lat-pong")?;
    let wait = match args.wait.as_deref() {
        Some("park") => Wait::Park,
        Some("backoff") => Wait::Backoff,
        _ => Wait::Busy,
    };
    let mut consumer = Consumer::new(&ping, GROUP)?.with_wait_strategy(wait.strategy());
    consumer.seek(SeekPolicy::Latest)?;
    let mut producer = Producer::new(&pong)?;
    let park = wait != Wait::Busy;
    let mut buf = RecordBuf::default();
    report("ready")?;
    for _ in 0..args.count {
        if park {
            consumer.recv_into(&mut buf, Some(Duration::from_secs(10)))?;
        } else {
            while consumer.poll_into(&mut buf)?.is_none() {
                std::hint::spin_loop();
            }
        }
        producer.send(buf.value())?;
    }
    Ok(())
}

/// How the stream producer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// One `send` per message.
    Single,
    /// `send_batch` of this many messages.
    Batch(usize),
}

/// How the stream consumer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// `poll_into`: copy each record out.
    Copy,
    /// `poll_with`: look at each record in place.
    ZeroCopy,
    /// `poll_into_batch`: copy up to 256 records per call into one buffer.
    Batch,
}

/// How a [`stream`] sends, reads, and what its topic does when full.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// How the producer sends.
    pub send: Send,
    /// How the consumer reads.
    pub read: Read,
    /// The topic's overflow policy.
    pub overflow: Overflow,
}

/// One producer process (the parent) streams `count` messages of `size`
/// bytes through a topic of `slots` (`overflow`: a backpressure topic holds
/// the producer back; on an overwrite topic a consumer that cannot keep up
/// loses records, counted in [`Stream::lost`]) to one consumer process.
/// Every message carries its sequence number in its first and last 8 bytes;
/// the consumer checks both (and counts gaps as lost).
pub fn stream(
    mgr: &TopicManager,
    cpus: Cpus,
    size: usize,
    slots: u64,
    count: u64,
    how: How,
) -> CliResult<(Stream, u64)> {
    let How {
        send,
        read,
        overflow,
    } = how;
    let size = size.max(16);
    let t = topic(mgr, "stream", slots, size, overflow)?;
    let commit_every = (slots / 4).max(1);
    let mut kid = Kid::spawn(
        mgr.namespace(),
        "shmq-consumer",
        cpus.child,
        &[
            "--count".into(),
            count.to_string(),
            "--size".into(),
            size.to_string(),
            "--slots".into(),
            commit_every.to_string(),
            "--read".into(),
            match read {
                Read::Copy => "copy".into(),
                Read::ZeroCopy => "zero-copy".into(),
                Read::Batch => "batch".into(),
            },
        ],
    )?;
    // The consumer's group exists before the producer starts, so
    // backpressure holds from the first message.
    kid.expect("ready")?;
    let mut producer = Producer::new(&t)?;
    let wakes_before = shmq::wake_stats().calls;
    go(&mut kid)?;
    // The consumer is polling before the first send (an overwrite topic
    // would otherwise count its start-up as loss).
    kid.expect("started")?;
    let sending = Instant::now();
    match send {
        Send::Single => {
            let mut msg = vec![0u8; size];
            for seq in 0..count {
                tag(&mut msg, seq);
                producer.send(&msg)?;
            }
        }
        Send::Batch(n) => {
            let mut msgs = vec![vec![0u8; size]; n];
            let mut seq = 0;
            while seq < count {
                let k = (count - seq).min(n as u64) as usize;
                for m in &mut msgs[..k] {
                    tag(m, seq);
                    seq += 1;
                }
                producer.send_batch(&msgs[..k])?;
            }
        }
    }
    let send_secs = sending.elapsed().as_secs_f64().max(1e-9);
    let wakes = shmq::wake_stats().calls - wakes_before;
    let kv = kid.expect("result")?;
    kid.finish()?;
    drop((producer, t));
    mgr.delete("stream")?;
    let mut stream = Stream::from_report(&kv, size)?;
    if overflow == Overflow::Overwrite {
        // The writer never waits here: the figure is the producer's rate,
        // and `lost` says whether the consumer kept up with it.
        stream.msgs_per_sec = count as f64 / send_secs;
        stream.gb_per_sec = stream.msgs_per_sec * size as f64 / 1e9;
    }
    Ok((stream, wakes))
}

fn tag(msg: &mut [u8], seq: u64) {
    let n = msg.len();
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

fn untag(v: &[u8]) -> Option<u64> {
    let n = v.len();
    let a = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let b = u64::from_le_bytes(v.get(n.checked_sub(8)?..)?.try_into().ok()?);
    (a == b).then_some(a)
}

/// Child side of [`stream`].
pub fn consume(ns: &str, args: &ChildArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let t = mgr.open("stream")?;
    let mut c = Consumer::new(&t, GROUP)?;
    c.seek(SeekPolicy::Offset(0))?;
    let commit_every = (args.slots as u64).max(1);
    let read = args.read.as_deref().unwrap_or("copy");
    let mut buf = RecordBuf::default();
    let mut batch = RecordBatch::new();
    report("ready")?;
    wait_go()?;
    report("started")?;
    let mut tally = Tally {
        size: args.size,
        ..Tally::default()
    };
    let mut t0 = None;
    let mut since_commit = 0u64;
    let mut seen_missed = 0u64;
    let (mut stall, mut last_poll) = (0u64, 0u64);
    while tally.n < args.count {
        let before = tally.n;
        match read {
            "zero-copy" => match c.poll_with(|r| (untag(r.value), r.value.len()))? {
                // Overwritten during the borrow: counted in `missed`.
                Some(v) if v.lapped => {}
                Some(v) => tally.check(v.output),
                None => {}
            },
            "batch" => {
                // The longest time between two polls once the stream has
                // started: a consumer descheduled longer than the ring lasts
                // loses records however fast it reads.
                let now = monotonic_ns();
                if t0.is_some() {
                    stall = stall.max(now.saturating_sub(last_poll));
                }
                last_poll = now;
                c.poll_into_batch(&mut batch, 256)?;
                for r in batch.iter() {
                    tally.check((untag(r.value), r.value.len()));
                }
            }
            _ => {
                if c.poll_into(&mut buf)?.is_some() {
                    tally.check((untag(buf.value()), buf.value().len()));
                }
            }
        }
        // Offsets lost to the writer count as gone by (and lost).
        let missed = c.missed();
        tally.n += missed - seen_missed;
        seen_missed = missed;
        if tally.n == before {
            std::hint::spin_loop();
            continue;
        }
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        since_commit += tally.n - before;
        if since_commit >= commit_every {
            since_commit = 0;
            c.commit()?;
        }
        if tally.expect >= args.count {
            break;
        }
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    c.commit()?;
    // Sequence gaps already include what the consumer was told it missed
    // (a lapped offset never arrives), so `missed` is not added again; it
    // is the lost count when no record arrived after the loss.
    let lost = tally.lost.max(c.missed());
    let corrupt = tally.corrupt + c.corrupt();
    let messages = tally.n.saturating_sub(c.missed());
    report(&format!(
        "result messages={messages} seconds={secs} lost={lost} corrupt={corrupt} stall_ns={stall}"
    ))
}

/// What a stream consumer received.
#[derive(Debug, Default)]
struct Tally {
    size: usize,
    n: u64,
    expect: u64,
    lost: u64,
    corrupt: u64,
}

impl Tally {
    fn check(&mut self, (seq, len): (Option<u64>, usize)) {
        self.n += 1;
        match seq {
            Some(seq) if len == self.size => {
                self.lost += seq.saturating_sub(self.expect);
                self.expect = seq + 1;
            }
            _ => self.corrupt += 1,
        }
    }
}

/// What the steady-rate experiment measured on the consumer's side.
#[derive(Debug)]
pub struct Steady {
    /// One-way latency, producer's timestamp to consumer's `recv` (ns).
    pub latency: Latency,
    /// The consumer's CPU time (user + system, `getrusage`) over the wall
    /// time of the stream, in percent of one CPU.
    pub cpu_percent: f64,
    /// Messages the consumer never saw.
    pub lost: u64,
    /// Futex parks of the consumer's wait per message received.
    pub parks_per_msg: f64,
    /// Spin rounds of the consumer's wait per message received.
    pub spins_per_msg: f64,
}

/// One producer process (the parent) sends `count` messages of 64 B at a
/// steady `rate` per second (paced by the clock, not back to back) to one
/// consumer process that waits with the default [`WaitStrategy`]: the
/// sidecar's case. Each message carries `CLOCK_MONOTONIC` at its send, so
/// the consumer measures one-way latency.
///
/// `busy`: the consumer busy-polls instead (the floor of this experiment:
/// whatever tail remains there is the machine's, not the wait strategy's).
pub fn steady(
    mgr: &TopicManager,
    cpus: Cpus,
    rate: u64,
    count: u64,
    busy: bool,
) -> CliResult<Steady> {
    let size = 64usize;
    let t = topic(mgr, "steady", 4096, size, Overflow::Overwrite)?;
    let mut kid = Kid::spawn(
        mgr.namespace(),
        "shmq-steady",
        cpus.child,
        &[
            "--count".into(),
            count.to_string(),
            "--size".into(),
            size.to_string(),
            "--wait".into(),
            if busy { "busy" } else { "default" }.into(),
        ],
    )?;
    kid.expect("ready")?;
    let mut producer = Producer::new(&t)?;
    go(&mut kid)?;
    kid.expect("started")?;
    let gap = 1_000_000_000 / rate.max(1);
    let mut msg = vec![0u8; size];
    let t0 = monotonic_ns();
    for i in 0..count {
        let due = t0 + i * gap;
        while monotonic_ns() < due {
            std::hint::spin_loop();
        }
        msg[8..16].copy_from_slice(&i.to_le_bytes());
        msg[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
        producer.send(&msg)?;
    }
    let kv = kid.expect("result")?;
    kid.finish()?;
    drop((producer, t));
    mgr.delete("steady")?;
    let n: f64 = field::<u64>(&kv, "messages")?.max(1) as f64;
    Ok(Steady {
        latency: Latency {
            samples: field(&kv, "samples")?,
            p50: field(&kv, "p50")?,
            p90: field(&kv, "p90")?,
            p99: field(&kv, "p99")?,
            p999: field(&kv, "p999")?,
            max: field(&kv, "max")?,
            curve: Vec::new(),
        },
        cpu_percent: field(&kv, "cpu")?,
        lost: field(&kv, "lost")?,
        parks_per_msg: field::<u64>(&kv, "parks")? as f64 / n,
        spins_per_msg: field::<u64>(&kv, "spins")? as f64 / n,
    })
}

/// Child side of [`steady`].
pub fn steady_consume(ns: &str, args: &ChildArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let t = mgr.open("steady")?;
    let strategy = match args.wait.as_deref() {
        Some("busy") => WaitStrategy::BusySpin,
        _ => WaitStrategy::default(),
    };
    let mut c = Consumer::new(&t, GROUP)?.with_wait_strategy(strategy);
    c.seek(SeekPolicy::Latest)?;
    let mut buf = RecordBuf::default();
    report("ready")?;
    wait_go()?;
    report("started")?;
    let warmup = args.count / 100;
    let mut samples = Vec::with_capacity(args.count as usize);
    let (mut n, mut expect, mut lost) = (0u64, 0u64, 0u64);
    let (cpu0, wall0) = (cpu_time_ns(), monotonic_ns());
    while expect < args.count {
        match c.recv_into(&mut buf, Some(Duration::from_secs(10))) {
            Ok(_) => {}
            Err(shmq::Error::Timeout) => break,
            Err(e) => return Err(e.into()),
        }
        let now = monotonic_ns();
        let v = buf.value();
        let (Some(sent), Some(seq)) = (
            v.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes),
            v.get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes),
        ) else {
            return Err(CliError::failed("steady: malformed message"));
        };
        n += 1;
        lost += seq.saturating_sub(expect);
        expect = seq + 1;
        if seq >= warmup {
            samples.push(now.saturating_sub(sent));
        }
    }
    let (cpu1, wall1) = (cpu_time_ns(), monotonic_ns());
    let cpu = (cpu1 - cpu0) as f64 * 100.0 / (wall1 - wall0).max(1) as f64;
    let l = Latency::from_samples(&mut samples);
    let w = c.wait_counters();
    report(&format!(
        "result messages={n} samples={} p50={} p90={} p99={} p999={} max={} cpu={cpu:.1} lost={} parks={} spins={}",
        l.samples,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        lost + c.missed(),
        w.parks,
        w.spins
    ))
}

/// `send` with no parked consumer makes no system call: a child process
/// forbids itself every syscall but `write` (seccomp filter; any other call
/// kills it with `SIGSYS`), sends `count` messages, and reports. Returns the
/// sends completed under the filter (the count, or an error).
pub fn no_syscall_sends(mgr: &TopicManager, cpus: Cpus, count: u64) -> CliResult<u64> {
    let t = topic(mgr, "nosys", 1024, 64, Overflow::Overwrite)?;
    let mut kid = Kid::spawn(
        mgr.namespace(),
        "nosys",
        cpus.child,
        &["--count".into(), count.to_string()],
    )?;
    let kv = kid.expect("result");
    let status = kid.wait_timeout(Duration::from_secs(30))?;
    drop(t);
    mgr.delete("nosys")?;
    let kv = kv.map_err(|e| {
        CliError::failed(format!("the send loop made a system call ({status}): {e}"))
    })?;
    let sent: u64 = field(&kv, "sent")?;
    // The child dies of SIGSYS at its first syscall after the report,
    // which proves the filter was on during the loop.
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(libc::SIGSYS) {
        return Err(CliError::failed(format!(
            "the no-syscall child was not under its seccomp filter ({status})"
        )));
    }
    Ok(sent)
}

/// Child side of [`no_syscall_sends`].
pub fn nosys(ns: &str, args: &ChildArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let t = mgr.open("nosys")?;
    let mut p = Producer::new(&t)?;
    let msg = [7u8; 64];
    p.send(&msg)?;
    let mut line = String::with_capacity(128);
    shmq::protocol::os::forbid_syscalls().map_err(|e| CliError::failed(e.to_string()))?;
    let mut sent = 0u64;
    for _ in 0..args.count {
        if p.send(&msg).is_ok() {
            sent += 1;
        }
    }
    use std::fmt::Write as _;
    let _ = writeln!(line, "result sent={sent}");
    let _ = shmq::protocol::os::write_fd(1, line.as_bytes());
    // Anything after this is a system call and ends the process (SIGSYS).
    std::mem::forget((p, t, mgr));
    Ok(())
}
