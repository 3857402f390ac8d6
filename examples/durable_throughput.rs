//! Throughput of a durable topic with each sync policy, beside a
//! shared-memory topic, measured in the same run.
//!
//! ```text
//! cargo run --release --example durable_throughput -- [RECORDS] [DATA_DIR]
//! ```
//!
//! One producer thread sends `RECORDS` (default 200,000) records of 100
//! bytes in batches of 64 (`send_batch`; EveryBatch is also measured with
//! single sends) while a reader thread of the same process reads them all;
//! the figure is records per second from the first send to the last record
//! read. `DATA_DIR` (default: a temporary directory under the current
//! directory, so on its disk rather than a tmpfs) holds the durable
//! topics; everything is deleted afterwards.

use std::time::{Duration, Instant};

use shmq::{Consumer, Producer, SeekPolicy, Storage, SyncPolicy, TopicConfig, TopicManager};

fn run(mgr: &TopicManager, name: &str, config: TopicConfig, records: u64, batch: usize) -> f64 {
    let topic = mgr.create(name, config).expect("create");
    let mut reader = Consumer::reader(&topic).expect("reader");
    reader.seek(SeekPolicy::Earliest).expect("seek");
    let value = [7u8; 100];
    let start = Instant::now();
    let read = std::thread::scope(|s| {
        let r = s.spawn(move || {
            let mut n = 0u64;
            while n < records {
                let polled = reader
                    .poll_timeout(4096, Duration::from_secs(10))
                    .expect("poll");
                assert!(!polled.records.is_empty(), "reader starved");
                n += polled.records.len() as u64;
            }
            n
        });
        let mut p = Producer::new(&topic).expect("producer");
        let values = vec![&value[..]; batch];
        let mut sent = 0u64;
        while sent < records {
            let k = batch.min((records - sent) as usize);
            if k == 1 {
                p.send(&value).expect("send");
            } else {
                p.send_batch(&values[..k]).expect("send_batch");
            }
            sent += k as u64;
        }
        r.join().expect("reader")
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(read, records);
    drop(topic);
    mgr.delete(name).expect("delete");
    records as f64 / secs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse().expect("RECORDS"))
        .unwrap_or(200_000);
    let tmp = match args.next() {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir_in("."),
    }
    .expect("temporary data directory");
    let ns = format!("durbench{}", std::process::id());
    let mgr = TopicManager::with_namespace(&ns).expect("manager");
    // A ring large enough that the writer never laps the reader.
    let base = TopicConfig::default()
        .partitions(1)
        .max_partitions(1)
        .slots(records.next_power_of_two().clamp(1024, 1 << 20))
        .slot_size(128);
    let file = |sync| {
        base.clone()
            .storage(Storage::File {
                dir: tmp.path().to_path_buf(),
            })
            .sync(sync)
    };
    let rows: Vec<(&str, TopicConfig, u64, usize)> = vec![
        ("shm", base.clone(), records, 64),
        ("file, sync none", file(SyncPolicy::None), records, 64),
        (
            "file, sync interval 10ms",
            file(SyncPolicy::Interval(Duration::from_millis(10))),
            records,
            64,
        ),
        (
            "file, sync every-batch",
            file(SyncPolicy::EveryBatch),
            records,
            64,
        ),
        (
            "file, sync every-batch, single sends",
            file(SyncPolicy::EveryBatch),
            (records / 100).max(1),
            1,
        ),
    ];
    println!(
        "{records} records of 100 bytes, batches of 64, data dir {}",
        tmp.path().display()
    );
    println!("{:<38} {:>14} {:>10}", "topic", "records/s", "records");
    for (i, (label, config, n, batch)) in rows.into_iter().enumerate() {
        let rate = run(&mgr, &format!("t{i}"), config, n, batch);
        println!("{label:<38} {rate:>14.0} {n:>10}");
    }
}
