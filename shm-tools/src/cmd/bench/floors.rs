//! The floors every shmq figure is compared with, measured in the same run:
//!
//! * **raw cache-line ping-pong**: two processes, one shared page, two
//!   atomics on separate cache lines; the parent stores `i` into the first,
//!   the child spins until it sees it and stores `i` into the second. The
//!   round trip is two cache-line transfers between the cores: the hardware's
//!   floor for any shared-memory request/response.
//! * **minimal SPSC ring**: the simplest correct single-producer ring in
//!   shared memory (fixed 64-byte slots, head and tail on their own lines,
//!   each side caching the other's index), the floor for throughput.
//! * **memcpy**: one thread copying message-sized buffers, the floor for
//!   bandwidth.
//! * **pipe / Unix socket ping-pong**: what a blocking kernel channel costs
//!   per round trip, the floor for a parked (sleeping) consumer.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::harness::{field, go, read_exact, report, wait_go, Cpus, Kid, Latency, Scratch};
use super::ChildArgs;
use crate::error::{CliError, CliResult};

/// Words of one ring slot (64 bytes).
const SLOT_WORDS: usize = 8;
/// Word index of the ping atomic (cache line 0) and of the pong one (line 1).
const PING: usize = 0;
const PONG: usize = 8;
/// SPSC ring layout in words: head on line 0, tail on line 1, slots from 16.
const HEAD: usize = 0;
const TAIL: usize = 8;
const SLOTS_AT: usize = 16;

/// Raw cache-line ping-pong: `warmup` then `count` timed round trips.
pub fn raw_pingpong(ns: &str, cpus: Cpus, warmup: u64, count: u64) -> CliResult<Latency> {
    let scratch = Scratch::create(ns, "pingpong", 4096)?;
    let w = scratch.words();
    let total = warmup + count;
    let mut kid = Kid::spawn(
        ns,
        "raw-echo",
        cpus.child,
        &[
            "--region".into(),
            scratch.region_name().into(),
            "--count".into(),
            total.to_string(),
        ],
    )?;
    kid.expect("ready")?;
    let mut samples = Vec::with_capacity(count as usize);
    let mut t = Instant::now();
    for i in 1..=total {
        w[PING].store(i, Ordering::Release);
        while w[PONG].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if i > warmup {
            samples.push((now - t).as_nanos() as u64);
        }
        t = now;
    }
    kid.finish()?;
    Ok(Latency::from_samples(&mut samples))
}

/// Child side of [`raw_pingpong`].
pub fn raw_echo(args: &ChildArgs) -> CliResult {
    let scratch = Scratch::open(args.region()?)?;
    let w = scratch.words();
    report("ready")?;
    for i in 1..=args.count {
        while w[PING].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        w[PONG].store(i, Ordering::Release);
    }
    Ok(())
}

/// Result of a one-way stream between two processes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Stream {
    /// Messages the consumer received.
    pub messages: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Consumer's time from the first message to the last, in seconds.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Payload gigabytes (10^9 bytes) per second.
    pub gb_per_sec: f64,
    /// Messages that never arrived (sequence gaps and reported lag).
    pub lost: u64,
    /// Messages that arrived damaged.
    pub corrupt: u64,
    /// The consumer's longest time between two polls, in nanoseconds (0
    /// where not measured).
    pub stall_ns: u64,
}

impl Stream {
    /// Build from a consumer's report line.
    pub fn from_report(kv: &[(String, String)], size: usize) -> CliResult<Stream> {
        let messages: u64 = field(kv, "messages")?;
        let seconds: f64 = field(kv, "seconds")?;
        let seconds = seconds.max(1e-9);
        let rate = messages.saturating_sub(1) as f64 / seconds;
        Ok(Stream {
            messages,
            size,
            seconds,
            msgs_per_sec: rate,
            gb_per_sec: rate * size as f64 / 1e9,
            lost: field(kv, "lost")?,
            corrupt: field(kv, "corrupt")?,
            stall_ns: field(kv, "stall_ns").unwrap_or(0),
        })
    }
}

/// Minimal SPSC ring: the parent produces `count` 64-byte messages into a
/// ring of `slots`, a child consumes and checks them.
pub fn spsc_ring(ns: &str, cpus: Cpus, slots: usize, count: u64) -> CliResult<Stream> {
    let scratch = Scratch::create(ns, "spsc", (SLOTS_AT + slots * SLOT_WORDS) * 8)?;
    let w = scratch.words();
    let mut kid = Kid::spawn(
        ns,
        "spsc-consumer",
        cpus.child,
        &[
            "--region".into(),
            scratch.region_name().into(),
            "--count".into(),
            count.to_string(),
            "--slots".into(),
            slots.to_string(),
        ],
    )?;
    kid.expect("ready")?;
    go(&mut kid)?;
    let cap = slots as u64;
    let mut head = 0u64;
    let mut tail_cache = 0u64;
    for seq in 0..count {
        if head - tail_cache == cap {
            loop {
                tail_cache = w[TAIL].load(Ordering::Acquire);
                if head - tail_cache < cap {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let at = SLOTS_AT + (head as usize & (slots - 1)) * SLOT_WORDS;
        w[at].store(seq, Ordering::Relaxed);
        for k in 1..SLOT_WORDS {
            w[at + k].store(
                seq ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                Ordering::Relaxed,
            );
        }
        head += 1;
        w[HEAD].store(head, Ordering::Release);
    }
    let kv = kid.expect("result")?;
    kid.finish()?;
    Stream::from_report(&kv, SLOT_WORDS * 8)
}

/// Child side of [`spsc_ring`].
pub fn spsc_consumer(args: &ChildArgs) -> CliResult {
    let scratch = Scratch::open(args.region()?)?;
    let w = scratch.words();
    let slots = args.slots;
    if !slots.is_power_of_two() || (SLOTS_AT + slots * SLOT_WORDS) > w.len() {
        return Err(CliError::usage("bad --slots for the SPSC region"));
    }
    report("ready")?;
    wait_go()?;
    let (mut tail, mut head_cache) = (0u64, 0u64);
    let (mut lost, mut corrupt, mut expect) = (0u64, 0u64, 0u64);
    let mut t0 = None;
    let mut msg = [0u64; SLOT_WORDS];
    for _ in 0..args.count {
        if tail == head_cache {
            loop {
                head_cache = w[HEAD].load(Ordering::Acquire);
                if head_cache != tail {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let at = SLOTS_AT + (tail as usize & (slots - 1)) * SLOT_WORDS;
        for (k, m) in msg.iter_mut().enumerate() {
            *m = w[at + k].load(Ordering::Relaxed);
        }
        tail += 1;
        w[TAIL].store(tail, Ordering::Release);
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        let seq = msg[0];
        if msg[SLOT_WORDS - 1]
            != seq ^ ((SLOT_WORDS - 1) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        {
            corrupt += 1;
        }
        lost += seq.saturating_sub(expect);
        expect = seq + 1;
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    report(&format!(
        "result messages={} seconds={secs} lost={lost} corrupt={corrupt}",
        args.count
    ))
}

/// Single-thread memcpy of `size`-byte buffers, `bytes` in total: GB/s.
pub fn memcpy(size: usize, bytes: u64) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size];
    let rounds = (bytes / size as u64).max(1);
    // Warm up (page faults, caches).
    for _ in 0..rounds.min(16) {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    let t = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (rounds * size as u64) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Pipe ping-pong: the child echoes `size`-byte messages from its stdin to
/// its stdout (blocking reads: each side sleeps until the other writes).
pub fn pipe_pingpong(
    ns: &str,
    cpus: Cpus,
    size: usize,
    warmup: u64,
    count: u64,
) -> CliResult<Latency> {
    let total = warmup + count;
    let mut kid = Kid::spawn(
        ns,
        "pipe-echo",
        cpus.child,
        &[
            "--count".into(),
            total.to_string(),
            "--size".into(),
            size.to_string(),
        ],
    )?;
    kid.expect("ready")?;
    let mut tx = kid
        .stdin
        .take()
        .ok_or_else(|| CliError::failed("no stdin"))?;
    let mut rx = kid
        .stdout
        .take()
        .ok_or_else(|| CliError::failed("no stdout"))?;
    let samples = pingpong(&mut tx, &mut rx, size, warmup, count)?;
    drop(tx);
    kid.finish()?;
    Ok(samples)
}

/// Child side of [`pipe_pingpong`].
pub fn pipe_echo(args: &ChildArgs) -> CliResult {
    report("ready")?;
    let mut rx = std::io::stdin().lock();
    let mut tx = std::io::stdout().lock();
    echo(&mut rx, &mut tx, args.size, args.count)
}

/// Unix stream socket ping-pong (abstract socket address, nothing on disk).
pub fn unix_pingpong(
    ns: &str,
    cpus: Cpus,
    size: usize,
    warmup: u64,
    count: u64,
) -> CliResult<Latency> {
    let total = warmup + count;
    let name = format!("shmq.{ns}.bench.{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    let mut kid = Kid::spawn(
        ns,
        "unix-echo",
        cpus.child,
        &[
            "--region".into(),
            name,
            "--count".into(),
            total.to_string(),
            "--size".into(),
            size.to_string(),
        ],
    )?;
    let (mut sock, _) = listener.accept()?;
    kid.expect("ready")?;
    let mut rx = sock.try_clone()?;
    let samples = pingpong(&mut sock, &mut rx, size, warmup, count)?;
    kid.finish()?;
    Ok(samples)
}

/// Child side of [`unix_pingpong`].
pub fn unix_echo(args: &ChildArgs) -> CliResult {
    let addr = SocketAddr::from_abstract_name(args.region()?.as_bytes())?;
    let mut sock = UnixStream::connect_addr(&addr)?;
    report("ready")?;
    let mut rx = sock.try_clone()?;
    echo(&mut rx, &mut sock, args.size, args.count)
}

fn pingpong(
    tx: &mut impl Write,
    rx: &mut impl Read,
    size: usize,
    warmup: u64,
    count: u64,
) -> CliResult<Latency> {
    let mut msg = vec![0u8; size.max(8)];
    let mut back = vec![0u8; size.max(8)];
    let mut samples = Vec::with_capacity(count as usize);
    let mut t = Instant::now();
    for i in 0..warmup + count {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        tx.write_all(&msg)?;
        tx.flush()?;
        read_exact(rx, &mut back)?;
        let now = Instant::now();
        if back[..8] != msg[..8] {
            return Err(CliError::failed("ping-pong echo mismatch"));
        }
        if i >= warmup {
            samples.push((now - t).as_nanos() as u64);
        }
        t = now;
    }
    Ok(Latency::from_samples(&mut samples))
}

fn echo(rx: &mut impl Read, tx: &mut impl Write, size: usize, count: u64) -> CliResult {
    let mut buf = vec![0u8; size.max(8)];
    for _ in 0..count {
        read_exact(rx, &mut buf)?;
        tx.write_all(&buf)?;
        tx.flush()?;
    }
    Ok(())
}
