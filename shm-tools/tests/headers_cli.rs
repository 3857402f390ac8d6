//! Record headers through the CLI: `shmq produce --header NAME=VALUE`
//! (repeatable) sets them, `shmq consume --format json` shows them.

use serde_json::Value;

mod common;
use common::Ns;

#[test]
fn headers_survive_produce_and_consume_json() {
    let ns = Ns::new("hdr");
    ns.ok(&["create", "h", "--partitions", "1", "--slots", "16"]);
    ns.ok_with(
        &[
            "produce",
            "h",
            "--key",
            "k",
            "--header",
            "trace-id=abc=1",
            "--header",
            "content-type=text/plain",
            "--header",
            "trace-id=again",
        ],
        b"one\ntwo\n",
    );
    ns.ok_with(&["produce", "h"], b"plain\n");
    let out = ns.ok(&[
        "consume", "h", "--group", "g", "--from", "earliest", "--format", "json",
    ]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 3, "{out}");
    for r in &records[..2] {
        assert_eq!(r["key"], "k");
        let h = r["headers"].as_array().expect("headers array");
        let pairs: Vec<(&str, &str, &str)> = h
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["value"].as_str().unwrap(),
                    e["encoding"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("trace-id", "abc=1", "utf8"),
                ("content-type", "text/plain", "utf8"),
                ("trace-id", "again", "utf8"),
            ]
        );
    }
    assert_eq!(records[0]["value"], "one");
    assert_eq!(records[1]["value"], "two");
    assert_eq!(records[2]["value"], "plain");
    assert_eq!(records[2]["headers"], Value::Array(vec![]));

    // A header without `=` is a usage error.
    let (code, _, err) = ns.code(&["produce", "h", "--header", "novalue"], b"x\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NAME=VALUE"), "{err}");

    ns.ok(&["delete", "h"]);
    assert_eq!(ns.files(), Vec::<String>::new(), "delete left files");
}
