//! Request/reply: 4 client processes and 2 responder processes at once,
//! every reply matched to its request; requests time out and a late reply
//! is not taken for the next request's.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    child_role, line_from_parent, send_line, spawn_child, tell_parent, wait_success, ChildLines,
    ShmGuard,
};
use shmq::{
    correlation, Error, GroupOptions, Headers, Requester, Responder, TopicManager,
    CORRELATION_HEADER, REPLY_TO_HEADER,
};

const CLIENTS: usize = 4;
const RESPONDERS: usize = 2;
const REQUESTS: usize = 300;

#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    match role.as_str() {
        "responder" => responder(&mgr),
        "client" => client(&mgr, &args[1]),
        other => panic!("unknown role {other}"),
    }
}

fn opts() -> GroupOptions {
    GroupOptions::default()
        .stale_after(Duration::from_secs(2))
        .rebalance_every(Duration::from_millis(20))
}

/// Answer `re:<body>` with header `by` = pid until the parent says stop;
/// then report how many it answered.
fn responder(mgr: &TopicManager) {
    let mut r =
        Responder::with_options(mgr, "svc", "workers", shmq::service_config(), opts()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = line_from_parent();
        s.store(true, Ordering::Relaxed);
    });
    tell_parent("ready", std::process::id());
    let pid = std::process::id().to_string();
    let by = Headers::new().with("by", &pid);
    let mut answered = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while let Some(req) = r.recv(Duration::from_millis(20)).unwrap() {
            let mut body = b"re:".to_vec();
            body.extend_from_slice(req.record.value());
            match r.reply_with(&req, &by, &body) {
                Ok(_) => answered += 1,
                Err(e) => panic!("reply to {}: {e}", req.reply_to),
            }
        }
    }
    r.commit().unwrap();
    assert_eq!(r.malformed(), 0);
    tell_parent("answered", answered);
}

/// Send REQUESTS requests, each waited for; check each reply is its own.
fn client(mgr: &TopicManager, name: &str) {
    let mut q = Requester::new(mgr, "svc").unwrap();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..REQUESTS {
        let body = format!("{name}-{i}");
        let reply = q
            .request(body.as_bytes(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{name} request {i}: {e}"));
        assert_eq!(reply.value(), format!("re:{body}").as_bytes());
        assert_eq!(correlation(&reply), Some(i as u64 + 1));
        *by.entry(reply.headers().get_str("by").unwrap().to_string())
            .or_default() += 1;
    }
    for (pid, n) in &by {
        tell_parent("by", format!("{pid}:{n}"));
    }
    tell_parent("done", REQUESTS);
}

#[test]
fn four_clients_two_responders_every_reply_matched() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("rr");
    let ns = guard.ns().to_string();
    let mut responders = Vec::new();
    let mut rlines = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..RESPONDERS {
        let mut c = spawn_child("responder", &[&ns]);
        let l = ChildLines::new(&mut c);
        pids.push(l.expect("ready"));
        responders.push(c);
        rlines.push(l);
    }
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = spawn_child("client", &[&ns, &format!("c{i}")]);
        let l = ChildLines::new(&mut c);
        clients.push((c, l));
    }
    let mut served_by: BTreeMap<String, u64> = BTreeMap::new();
    for (c, l) in &mut clients {
        loop {
            let (k, v) = l.next(common::CHILD_DEADLINE).expect("client reports");
            if k == "done" {
                assert_eq!(v, REQUESTS.to_string());
                break;
            }
            assert_eq!(k, "by");
            let (pid, n) = v.split_once(':').unwrap();
            *served_by.entry(pid.to_string()).or_default() += n.parse::<u64>().unwrap();
        }
        wait_success(c);
    }
    let mut answered = 0u64;
    for (c, l) in responders.iter_mut().zip(&rlines) {
        send_line(c.stdin.as_mut().unwrap(), "stop");
        answered += l.expect_parsed::<u64>("answered");
        wait_success(c);
    }
    assert_eq!(
        answered,
        (CLIENTS * REQUESTS) as u64,
        "each request answered once"
    );
    assert_eq!(served_by.values().sum::<u64>(), (CLIENTS * REQUESTS) as u64);
    for pid in &pids {
        assert!(
            served_by.get(pid).copied().unwrap_or(0) > 0,
            "responder {pid} answered nothing: {served_by:?}"
        );
    }
    // Every client deleted its reply topic when it finished.
    let mgr = guard.manager();
    assert_eq!(mgr.list().unwrap(), ["svc"]);
    drop(mgr);
    guard.finish();
}

#[test]
fn requests_time_out_and_late_replies_are_dropped() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("rrto");
    let mgr = guard.manager();
    let mut q = Requester::new(&mgr, "svc").unwrap();
    // Nobody answers yet.
    let t0 = std::time::Instant::now();
    let e = q.request(b"first", Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(100));

    // A responder starts late, finds the first request and answers it
    // after the requester gave up; the second request gets its own reply.
    let mut r = Responder::with_options(&mgr, "svc", "w", shmq::service_config(), opts()).unwrap();
    let req = r
        .recv(Duration::from_secs(5))
        .unwrap()
        .expect("the first request");
    assert_eq!(req.record.value(), b"first");
    assert_eq!(req.correlation_id, 1);
    assert_eq!(req.reply_to, q.reply_topic());
    assert_eq!(
        req.record.headers().get_str(REPLY_TO_HEADER),
        Some(q.reply_topic())
    );
    r.reply(&req, b"late").unwrap();
    let id = q
        .send(
            None,
            &Headers::new().with("mine", "x"),
            b"second",
            Duration::from_secs(1),
        )
        .unwrap();
    let req2 = r
        .recv(Duration::from_secs(5))
        .unwrap()
        .expect("the second request");
    assert_eq!(req2.record.headers().get_str("mine"), Some("x"));
    r.reply(&req2, b"on time").unwrap();
    let reply = q.wait(id, Duration::from_secs(5)).unwrap();
    assert_eq!(reply.value(), b"on time");
    assert_eq!(reply.headers().get_str(CORRELATION_HEADER), Some("2"));

    // A request without the headers is skipped and counted.
    let svc = mgr.open("svc").unwrap();
    let mut raw = shmq::Producer::with_partitions(&svc, shmq::Partitions::AnyFree(1)).unwrap();
    raw.send(b"not a request").unwrap();
    assert!(r.recv(Duration::from_millis(200)).unwrap().is_none());
    assert_eq!(r.malformed(), 1);

    // The requester gone, its reply topic is deleted and a reply to it fails.
    let reply_topic = q.reply_topic().to_string();
    drop(q);
    assert!(!mgr.list().unwrap().contains(&reply_topic));
    assert!(r.reply(&req2, b"too late").is_err());
    drop((r, raw, svc, mgr));
    guard.finish();
}
