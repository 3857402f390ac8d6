//! Send messages to the `example` topic; pair it with `examples/consumer.rs`.
//!
//! Run each in its own terminal, in either order (whichever starts first
//! creates the topic):
//!
//! ```text
//! cargo run --example consumer
//! cargo run --example producer -- 20     # send 20 messages (default 10)
//! ```
//!
//! Both use the namespace in `SHMQ_NAMESPACE` (default `default`). The topic
//! stays in `/dev/shm` after they exit, so a consumer started later still
//! reads what was retained; remove it with `cargo run -p shm-tools -- delete example`.

use std::time::Duration;

use shmq::{Producer, TopicConfig, TopicManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 10,
    };
    let mgr = TopicManager::new()?;
    let topic = mgr.open_or_create("example", TopicConfig::default())?;
    let mut producer = Producer::new(&topic)?;
    for i in 0..count {
        // Records with the same key land in the same partition, in order.
        let key = format!("user-{}", i % 3);
        let sent = producer.send_keyed(key.as_bytes(), format!("message {i}").as_bytes())?;
        println!(
            "sent {key} message {i} -> partition {} offset {}",
            sent.partition, sent.offset
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
