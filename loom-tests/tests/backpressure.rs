//! The backpressure cursor check under loom: a writer on a 2-slot ring that
//! asks `group_protocol::write_limit` before every write never overwrites an
//! offset the (live) group has not committed, so its reader is never lapped
//! and reads every record intact, in order. A mutant writer that skips the
//! check must be caught.
#![cfg(loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::group_protocol as proto;
use shmq::protocol::layout::GroupPartition;
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, Writer};

const SLOTS: u64 = 2;
/// Enough records to wrap the ring (offset 2 reuses offset 0's slot).
const RECORDS: u64 = 3;

fn value(offset: u64) -> u64 {
    100 + offset
}

struct Shared {
    ring: Ring,
    group: GroupPartition,
}

/// The group's only consumer: read each offset, then commit past it (the
/// Release store of `ShmOffsetStore::commit` / `ConsumerGroup::commit`).
fn consumer(s: &Shared) {
    let mut buf = RecordBuf::default();
    let mut offset = 0;
    while offset < RECORDS {
        match ring::read(&s.ring.hdr, &s.ring.mem, offset, &mut buf) {
            ReadOutcome::Record => {
                assert_eq!(
                    decode(&buf),
                    value(offset),
                    "{VIOLATION}: wrong record at {offset}"
                );
                offset += 1;
                // SYNC POINT "commit".
                s.group.committed.store(offset + 1, Ordering::Release);
            }
            ReadOutcome::NotYet => thread::yield_now(),
            ReadOutcome::Lapped { missed, .. } => {
                panic!("{VIOLATION}: writer overwrote uncommitted offset {offset} ({missed} lost)")
            }
            ReadOutcome::Corrupt => panic!("{VIOLATION}: corrupt record at {offset}"),
        }
    }
}

fn model(check_limit: bool) {
    let s = Arc::new(Shared {
        ring: Ring::new(SLOTS),
        group: GroupPartition::new(),
    });
    // The reader publishes where it starts before it reads (what every
    // `Consumer` seek does): a line nobody reads does not hold the writer.
    proto::publish_start(&s.group, 0);
    let reader = {
        let s = s.clone();
        thread::spawn(move || consumer(&s))
    };
    let mut w = loom_tests::owned_writer(&s.ring, 1);
    for o in 0..RECORDS {
        if check_limit {
            // The producer's rule: wait while the next offset reaches the limit.
            while o >= proto::write_limit(proto::committed_floor(&s.group), SLOTS) {
                thread::yield_now();
            }
        }
        let v = value(o);
        assert_eq!(
            w.write_slot(&s.ring.hdr, &s.ring.mem, v, None, &record(v)),
            Ok(o)
        );
        w.commit(&s.ring.hdr);
    }
    reader.join().unwrap();
    assert_eq!(
        proto::committed_floor(&s.group),
        Some(RECORDS),
        "{VIOLATION}: final commit lost"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn backpressure_writer_never_laps_a_live_group() {
    check("backpressure_writer_never_laps_a_live_group", || {
        model(true)
    });
}

/// Proof the model can fail: without the limit check the writer laps the
/// reader in some interleaving.
#[test]
fn backpressure_mutant_without_check_is_caught() {
    let msg = loom_tests::expect_violation("backpressure_no_check", || model(false));
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}
