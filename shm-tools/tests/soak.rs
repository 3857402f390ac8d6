//! `shmq soak` end to end: a short run with kills passes, and a producer that
//! damages a record on purpose makes it fail. Longer runs:
//! `SHMQ_SOAK_SECS=600 cargo test --release -p shm-tools --test soak`.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shmq");

fn soak(extra: &[&str]) -> (Output, Value) {
    let out = Command::new(BIN)
        .args(["soak", "--format", "json"])
        .args(extra)
        .output()
        .expect("run shmq soak");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "soak printed no JSON verdict ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // Whatever the verdict, the run's namespace is gone.
    let ns = v["namespace"].as_str().expect("namespace").to_string();
    let prefix = format!("shmq.{ns}.");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "soak left {left:?} in /dev/shm");
    (out, v)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn a_short_soak_with_kills_passes() {
    let secs = std::env::var("SHMQ_SOAK_SECS").unwrap_or_else(|_| "4".into());
    let (out, v) = soak(&["--duration", &format!("{secs}s"), "--kill-every", "100ms"]);
    assert!(
        out.status.success() && v["pass"] == true,
        "verdict: {v:#}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(n(&v, "messages") > 0 && n(&v, "delivered") > 0, "{v:#}");
    let kills = &v["kills"];
    assert!(n(kills, "producers") + n(kills, "members") > 0, "{v:#}");
    for key in [
        "lost_backpressure",
        "lost_unreported",
        "wrong_duplicates",
        "conflicts",
        "corrupt",
        "misplaced",
    ] {
        assert_eq!(n(&v, key), 0, "{key}: {v:#}");
    }
    // Two topics (backpressure, overwrite) x two groups.
    assert_eq!(v["per_group"].as_array().map(Vec::len), Some(4), "{v:#}");
    assert!(n(&v["peak_rss_kib"], "member") > 0, "{v:#}");
}

#[test]
fn a_damaged_record_fails_the_soak() {
    for (fault, key) in [("corrupt", "corrupt"), ("skip", "misplaced")] {
        let (out, v) = soak(&[
            "--duration",
            "2s",
            "--kill-every",
            "0",
            "--overflow",
            "backpressure",
            "--inject-fault",
            fault,
        ]);
        assert_eq!(out.status.code(), Some(1), "{fault}: {v:#}");
        assert_eq!(v["pass"], false, "{fault}: {v:#}");
        // One damaged record per partition, seen by each of the 2 groups.
        assert_eq!(n(&v, key), 4, "{fault}: {v:#}");
        assert_eq!(n(&v, "lost_backpressure"), 4, "{fault}: {v:#}");
    }
}
