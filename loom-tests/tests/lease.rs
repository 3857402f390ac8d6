//! Region lease renewal racing the supervisor's reclaim, under loom.
//!
//! Exactly one side wins the CAS on `expiry`: a lost renewal reports
//! `LeaseExpired`; a won renewal means `try_reclaim` answered `Alive`, and the
//! region is not marked reclaimed.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, Ring, T0, TTL, VIOLATION};
use shmq::protocol::layout::{Lease, RECLAIMED};
use shmq::protocol::lease::{self, LeaseExpired, Reclaim};
use shmq::protocol::ring::{WriteError, Writer};

/// Well past the lease's expiry (`T0 + TTL`).
const LATE: u64 = T0 + 3 * TTL;

/// Two renewers (different clocks, so the CAS loop retries) and the
/// supervisor race on an expired lease.
fn renew_vs_reclaim() {
    let lease = Arc::new(Lease::new(T0, TTL));
    let renewers: Vec<_> = [LATE, LATE + 10]
        .into_iter()
        .map(|now| {
            let lease = lease.clone();
            thread::spawn(move || (now, lease::renew(&lease, now)))
        })
        .collect();
    let reclaim = lease::try_reclaim(&lease, LATE, 0);
    let renewed: Vec<(u64, Result<u64, LeaseExpired>)> =
        renewers.into_iter().map(|h| h.join().unwrap()).collect();
    let expiry = lease.expiry.load(loom::sync::atomic::Ordering::Relaxed);
    let best = renewed
        .iter()
        .map(|&(now, _)| now + TTL)
        .max()
        .expect("two renewers");
    match reclaim {
        Reclaim::Reclaimed => {
            for (now, r) in &renewed {
                assert_eq!(
                    *r,
                    Err(LeaseExpired),
                    "{VIOLATION}: the supervisor reclaimed but the renewal at {now} also won"
                );
            }
            assert_eq!(expiry, RECLAIMED, "{VIOLATION}: reclaimed but not marked");
        }
        Reclaim::Alive(seen) => {
            // The supervisor lost: some renewal won, so none may have lost.
            for (now, r) in &renewed {
                let got = r.unwrap_or_else(|_| {
                    panic!("{VIOLATION}: renewal at {now} lost but the region is alive")
                });
                assert!(
                    got >= now + TTL && got <= best,
                    "{VIOLATION}: renewal at {now} returned {got}"
                );
            }
            assert!(
                seen > LATE && seen <= best,
                "{VIOLATION}: Alive({seen}) is not a renewed expiry"
            );
            assert_eq!(expiry, best, "{VIOLATION}: the later renewal was lost");
        }
        Reclaim::AlreadyReclaimed => panic!("{VIOLATION}: nobody else reclaims"),
    }
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn lease_renew_vs_reclaim() {
    check("lease_renew_vs_reclaim", renew_vs_reclaim);
}

/// A renewal racing topic deletion (`mark_reclaimed`) while a writer checks
/// the region: deletion always wins in the end, a renewal ordered after it
/// fails, and a writer that observed the deletion refuses to write.
fn renew_vs_delete() {
    let r = Arc::new(Ring::new(2));
    let renewer = {
        let r = r.clone();
        thread::spawn(move || lease::renew(&r.hdr.lease, LATE))
    };
    let writer = {
        let r = r.clone();
        thread::spawn(move || {
            let w = loom_tests::owned_writer(&r, 0);
            let seen = lease::is_reclaimed(&r.hdr.lease);
            (seen, w.check(&r.hdr, &r.mem))
        })
    };
    let first = lease::mark_reclaimed(&r.hdr.lease);
    assert!(first, "{VIOLATION}: nobody else deleted the topic");
    let renewed = renewer.join().unwrap();
    let (seen, checked) = writer.join().unwrap();
    assert!(
        lease::is_reclaimed(&r.hdr.lease),
        "{VIOLATION}: a renewal undid the deletion (renewal returned {renewed:?})"
    );
    if seen {
        assert_eq!(
            checked,
            Err(WriteError::LeaseExpired),
            "{VIOLATION}: the writer saw the deletion, then was allowed to write"
        );
    }
    // After the deletion is visible, renewing fails.
    assert_eq!(lease::renew(&r.hdr.lease, LATE + 1), Err(LeaseExpired));
    assert!(!lease::mark_reclaimed(&r.hdr.lease));
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn lease_renew_vs_delete() {
    check("lease_renew_vs_delete", renew_vs_delete);
}
