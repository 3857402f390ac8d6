//! The shmq side of the bench: the same experiments as the floors, through
//! real topics in the bench's private namespace, between two processes.

use std::time::{Duration, Instant};

use shmq::{
    Consumer, Overflow, Producer, RecordBuf, SeekPolicy, Topic, TopicConfig, TopicManager,
    WaitStrategy,
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
    /// `recv_into` with [`WaitStrategy::Backoff`] (the default): spin, then
    /// yield, then park.
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
}

/// One producer process (the parent) streams `count` messages of `size`
/// bytes through a backpressure topic of `slots` to one consumer process.
/// Every message carries its sequence number in its first and last 8 bytes;
/// the consumer checks both (and counts gaps as lost).
pub fn stream(
    mgr: &TopicManager,
    cpus: Cpus,
    size: usize,
    slots: u64,
    count: u64,
    send: Send,
    read: Read,
) -> CliResult<(Stream, u64)> {
    let size = size.max(16);
    let t = topic(mgr, "stream", slots, size, Overflow::Backpressure)?;
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
            },
        ],
    )?;
    // The consumer's group exists before the producer starts, so
    // backpressure holds from the first message.
    kid.expect("ready")?;
    let mut producer = Producer::new(&t)?;
    let wakes_before = shmq::wake_stats().calls;
    go(&mut kid)?;
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
    let wakes = shmq::wake_stats().calls - wakes_before;
    let kv = kid.expect("result")?;
    kid.finish()?;
    drop((producer, t));
    mgr.delete("stream")?;
    Ok((Stream::from_report(&kv, size)?, wakes))
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
    let zero_copy = args.read.as_deref() == Some("zero-copy");
    let mut buf = RecordBuf::default();
    report("ready")?;
    wait_go()?;
    let (mut n, mut expect, mut lost, mut corrupt) = (0u64, 0u64, 0u64, 0u64);
    let mut t0 = None;
    while n < args.count {
        let seq = if zero_copy {
            match c.poll_with(|r| (untag(r.value), r.value.len()))? {
                // Overwritten during the borrow: counted in `missed`.
                Some(v) if v.lapped => None,
                Some(v) => Some(v.output),
                None => {
                    std::hint::spin_loop();
                    continue;
                }
            }
        } else {
            match c.poll_into(&mut buf)? {
                Some(_) => Some((untag(buf.value()), buf.value().len())),
                None => {
                    std::hint::spin_loop();
                    continue;
                }
            }
        };
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        n += 1;
        match seq {
            Some((Some(seq), len)) if len == args.size => {
                lost += seq.saturating_sub(expect);
                expect = seq + 1;
            }
            Some(_) => corrupt += 1,
            None => {}
        }
        if n % commit_every == 0 {
            c.commit()?;
        }
        if lost > 0 && expect >= args.count {
            break;
        }
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    c.commit()?;
    lost += c.missed();
    corrupt += c.corrupt();
    report(&format!(
        "result messages={n} seconds={secs} lost={lost} corrupt={corrupt}"
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
