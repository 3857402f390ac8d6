//! Print the messages of the `example` topic; pair it with
//! `examples/producer.rs`.
//!
//! Run each in its own terminal, in either order (whichever starts first
//! creates the topic):
//!
//! ```text
//! cargo run --example consumer           # until Ctrl-C
//! cargo run --example consumer -- 20     # exit after 20 messages
//! cargo run --example producer -- 20
//! ```
//!
//! The consumer belongs to the group `example-printer` and commits after every
//! batch, so a restarted consumer continues where the last one stopped.

use std::time::Duration;

use shmq::{Consumer, TopicConfig, TopicManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<usize> = std::env::args().nth(1).map(|n| n.parse()).transpose()?;
    let mgr = TopicManager::new()?;
    let topic = mgr.open_or_create("example", TopicConfig::default())?;
    let mut consumer = Consumer::new(&topic, "example-printer")?;
    let mut received = 0;
    while !limit.is_some_and(|n| received >= n) {
        let polled = consumer.poll_timeout(100, Duration::from_secs(1))?;
        for lag in &polled.lagged {
            println!(
                "lost {} messages on partition {}",
                lag.missed, lag.partition
            );
        }
        for record in &polled.records {
            let key = record.key.as_deref().map(String::from_utf8_lossy);
            println!(
                "partition {} offset {} key {:?}: {}",
                record.partition,
                record.offset,
                key.unwrap_or_default(),
                String::from_utf8_lossy(&record.value)
            );
        }
        received += polled.records.len();
        consumer.commit()?;
    }
    Ok(())
}
