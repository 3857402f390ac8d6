//! What headers, filters and typed codecs cost per record, in one process
//! (send then read back, so both sides' costs add up), beside plain bytes
//! measured in the same run:
//!
//! ```console
//! cargo run --release --features codecs --example record_cost
//! ```
//!
//! Figures are for comparison within one run; the machine and its load set
//! the absolute numbers.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use shmq::typed::{Codec, Compression, Json, MsgPack, Postcard, TypedConsumer, TypedProducer};
use shmq::{Consumer, Headers, Producer, RecordBuf, SeekPolicy, TopicConfig, TopicManager};

const N: u64 = 200_000;

#[derive(Serialize, Deserialize)]
struct Tick {
    seq: u64,
    symbol: String,
    bid: u32,
    ask: u32,
}

fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        symbol: "ACME".into(),
        bid: seq as u32,
        ask: seq as u32 + 1,
    }
}

fn report(what: &str, start: Instant, n: u64) {
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{what:<44} {ns:>8.0} ns/record");
}

fn typed<C: Codec>(topic: &shmq::Topic, what: &str, compression: Compression, text: usize) {
    let mut tx = TypedProducer::<Tick, C>::new(Producer::new(topic).unwrap())
        .with_compression(compression, 0);
    let mut c = Consumer::reader(topic).unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut rx = TypedConsumer::<Tick, C>::new(c);
    let t0 = Instant::now();
    for i in 0..N {
        let mut t = tick(i);
        if text > 0 {
            t.symbol = "ACME ".repeat(text);
        }
        tx.send(&t).unwrap();
        let m = rx.poll().unwrap().expect("just sent");
        assert_eq!(m.value.seq, i);
    }
    report(what, t0, N);
}

fn main() -> Result<(), shmq::Error> {
    let ns = format!("cost{}", std::process::id());
    let mgr = TopicManager::with_namespace(&ns)?;
    let topic = mgr.create(
        "cost",
        TopicConfig::default()
            .partitions(1)
            .slots(1024)
            .slot_size(2048),
    )?;
    {
        let mut p = Producer::new(&topic)?;
        let mut c = Consumer::reader(&topic)?;
        let mut buf = RecordBuf::default();
        let value = [7u8; 64];
        let t0 = Instant::now();
        for _ in 0..N {
            p.send(&value)?;
            c.poll_into(&mut buf)?.expect("just sent");
        }
        report("bytes: send + poll_into (64 B)", t0, N);

        let h = Headers::new()
            .with("trace-id", "4bf92f3577b34da6")
            .with("type", "tick");
        let t0 = Instant::now();
        for _ in 0..N {
            p.send_with(None, &h, &value)?;
            c.poll_into(&mut buf)?.expect("just sent");
            assert_eq!(buf.headers().len(), 2);
        }
        report("bytes + 2 headers: send_with + poll_into", t0, N);

        let t0 = Instant::now();
        let mut kept = 0u64;
        for i in 0..N {
            p.send_with(None, &h, &value)?;
            if c.poll_into_filtered(&mut buf, |r| {
                i % 2 == 0 && r.headers.get("type") == Some(b"tick")
            })?
            .is_some()
            {
                kept += 1;
            }
        }
        assert_eq!(kept, N / 2);
        report("bytes + 2 headers, filter keeps half", t0, N);
    }
    typed::<Json>(&topic, "typed json", Compression::None, 0);
    typed::<Postcard>(&topic, "typed postcard", Compression::None, 0);
    typed::<MsgPack>(&topic, "typed msgpack", Compression::None, 0);
    typed::<Postcard>(&topic, "typed postcard, 1 KB text", Compression::None, 200);
    typed::<Postcard>(
        &topic,
        "typed postcard + lz4, 1 KB text",
        Compression::Lz4,
        200,
    );
    typed::<Postcard>(
        &topic,
        "typed postcard + zstd(3), 1 KB text",
        Compression::Zstd(3),
        200,
    );
    drop(topic);
    mgr.delete("cost")?;
    Ok(())
}
