//! `shmq` with durable topics: `create --storage DIR --sync ...`, `list` and
//! `info` showing the storage, and every verb finding the topic through
//! `--storage DIR` or `SHMQ_DATA_DIR` once `/dev/shm` forgot it.

mod common;

use common::Ns;
use serde_json::Value;

/// Remove every entry of the namespace from /dev/shm (what a reboot does).
fn wipe(ns: &Ns) {
    for f in ns.files() {
        std::fs::remove_file(format!("/dev/shm/{f}")).unwrap();
    }
}

#[test]
fn durable_topic_survives_a_wiped_dev_shm_through_the_cli() {
    let ns = Ns::new("dcli");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = ns.ok(&[
        "create",
        "ledger",
        "--storage",
        d,
        "--sync",
        "every-batch",
        "--partitions",
        "1",
        "--slots",
        "64",
        "--slot-size",
        "100",
    ]);
    assert!(out.contains(d) && out.contains("every-batch"), "{out}");
    assert!(dir.path().join(&ns.0).join("ledger.p0").is_file());
    ns.ok_with(&["produce", "ledger"], b"one\ntwo\nthree\n");

    let list: Value = serde_json::from_str(&ns.ok(&["list", "--format", "json"])).unwrap();
    let t = &list["topics"][0];
    assert_eq!(t["storage"], "file", "{list}");
    assert_eq!(t["sync"], "every-batch");
    let canon = dir.path().canonicalize().unwrap();
    assert_eq!(t["data_dir"], canon.to_str().unwrap());
    let info: Value =
        serde_json::from_str(&ns.ok(&["info", "ledger", "--format", "json"])).unwrap();
    assert_eq!(info["config"]["storage"], "file", "{info}");
    assert_eq!(info["config"]["expire_files"], false);
    assert!(ns.ok(&["list"]).contains("file:"));

    wipe(&ns);
    // Forgotten without the directory ...
    assert!(ns.ok(&["list"]).contains("no topics"));
    ns.fails(&["info", "ledger"], b"", 3);
    // ... found with it, by flag or by environment, on any verb.
    let table = ns.ok(&["info", "ledger", "--storage", d]);
    assert!(table.contains("storage: file:"), "{table}");
    wipe(&ns);
    let out = ns
        .cmd(&["consume", "ledger", "--from", "earliest", "--max", "3"])
        .env("SHMQ_DATA_DIR", d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");
    ns.ok(&["delete", "ledger", "--storage", d]);
    assert_eq!(
        std::fs::read_dir(dir.path().join(&ns.0)).unwrap().count(),
        0,
        "delete left files"
    );
}

#[test]
fn durable_create_bad_input_exits_with_usage_code() {
    let ns = Ns::new("dcbad");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = ns.fails(
        &["create", "t", "--storage", missing.to_str().unwrap()],
        b"",
        2,
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = ns.fails(
        &[
            "create",
            "t",
            "--storage",
            dir.path().to_str().unwrap(),
            "--sync",
            "sometimes",
        ],
        b"",
        2,
    );
    assert!(err.contains("every-batch"), "{err}");
    assert!(ns.files().iter().all(|f| f.contains("_tok")));
}
