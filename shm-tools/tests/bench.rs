//! `shmq bench` end to end, at a tiny scale (the figures themselves are not
//! checked: they depend on the machine; the bench's structure, its
//! correctness checks and its cleanup are).

use std::process::Command;

use serde_json::Value;

fn shm_left(pid: u32) -> Vec<String> {
    let prefix = format!("shmq.bench{pid}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn run_bench(args: &[&str]) -> (Value, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .arg("bench")
        .args(args)
        .args(["--format", "json", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shmq bench");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "shmq bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("bench prints one JSON document");
    (doc, pid)
}

#[test]
fn every_row_has_its_floor_and_nothing_is_left_behind() {
    let svg = std::env::temp_dir().join(format!("shmq-bench-test-{}.svg", std::process::id()));
    let (doc, pid) = run_bench(&["--scale", "0.02", "--plot", svg.to_str().unwrap()]);
    let m = &doc["median"];
    let num = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("figure {k} missing in {m}"))
    };
    // Latency: every series, every percentile, ordered.
    for series in ["raw", "busy", "pipe", "unix", "park", "backoff"] {
        let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|q| num(&format!("lat.{series}.{q}")))
            .collect();
        assert!(p[0] > 0.0, "{series}: {p:?}");
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{series}: {p:?}");
    }
    // Throughput and bandwidth: positive rates, nothing corrupt, nothing
    // lost where the topic holds the producer back. The `send` row runs on
    // an overwrite topic: whether its consumer kept up is a speed figure
    // (reported, never asserted here).
    for k in ["spsc", "single", "batch"] {
        assert!(num(&format!("tput.{k}.msgs_per_sec")) > 0.0);
        if k == "single" {
            assert!(num(&format!("tput.{k}.lost")) >= 0.0, "{k}");
        } else {
            assert_eq!(num(&format!("tput.{k}.lost")), 0.0, "{k}");
        }
        assert_eq!(num(&format!("tput.{k}.corrupt")), 0.0, "{k}");
    }
    // Steady rate with the default strategy: percentiles in order, the
    // consumer's CPU use measured.
    for series in ["steady", "steady_busy"] {
        let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|q| num(&format!("lat.{series}.{q}")))
            .collect();
        assert!(
            p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]),
            "{series}: {p:?}"
        );
    }
    assert!(num("steady.cpu_percent") >= 0.0);
    assert!(num("steady.messages") > 0.0);
    assert_eq!(
        num("tput.wake_syscalls"),
        0.0,
        "a streamed send woke someone"
    );
    for size in [4096, 65536, 1 << 20] {
        for k in ["memcpy", "copy", "zerocopy"] {
            assert!(num(&format!("bw.{size}.{k}")) > 0.0, "{size} {k}");
        }
        assert_eq!(num(&format!("bw.{size}.lost")), 0.0);
        assert_eq!(num(&format!("bw.{size}.corrupt")), 0.0);
    }
    // The syscall check ran under the seccomp filter and found none.
    assert_eq!(num("nosys.syscalls"), 0.0);
    assert!(num("nosys.sends") > 0.0);
    // Nine targets, each with a floor (or an absolute bound) and the ratio
    // between the two.
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 9, "{targets:?}");
    for t in targets {
        let (shmq, floor, ratio) = (
            t["shmq"].as_f64().unwrap(),
            t["floor"].as_f64().unwrap(),
            t["ratio"].as_f64().unwrap(),
        );
        assert!(floor > 0.0, "{t}");
        if t["target"] != "0" {
            // Ratios are medians of per-run ratios; with one run they match.
            assert!(
                (ratio - shmq / floor).abs() <= 1e-6 * ratio.abs().max(1.0),
                "{t}"
            );
        }
        assert!(t["pass"].is_boolean());
    }
    let syscalls = targets.iter().find(|t| t["target"] == "0").unwrap();
    assert_eq!(syscalls["pass"], true);
    // The plot names shmq and its floors.
    let plot = std::fs::read_to_string(&svg).expect("plot written");
    let _ = std::fs::remove_file(&svg);
    assert!(
        plot.starts_with("<svg") || plot.contains("<svg"),
        "not an SVG"
    );
    for label in [
        "shmq busy-poll",
        "raw cache-line ping-pong",
        "pipe ping-pong",
    ] {
        assert!(plot.contains(label), "plot lacks {label}");
    }
    let left = shm_left(pid);
    assert!(left.is_empty(), "bench left {left:?} in /dev/shm");
}

#[test]
fn one_mode_with_several_runs_reports_medians_of_that_mode() {
    let (doc, pid) = run_bench(&["latency", "--runs", "3", "--scale", "0.01", "--size", "128"]);
    assert_eq!(doc["setup"]["runs"], 3);
    assert_eq!(doc["setup"]["latency_size"], 128);
    // The header names the wake-up path that ran (membarrier on this
    // kernel, or the SeqCst fallback).
    let wakeup = doc["setup"]["wakeup"].as_str().unwrap_or_default();
    assert!(
        wakeup.starts_with("membarrier(GLOBAL_EXPEDITED)") || wakeup.starts_with("SeqCst fence"),
        "{wakeup:?}"
    );
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let m = doc["median"].as_object().unwrap();
    assert!(m.contains_key("lat.busy.p50"));
    assert!(
        !m.keys()
            .any(|k| k.starts_with("tput.") || k.starts_with("bw.")),
        "{m:?}"
    );
    // The median of three runs is one of them.
    let p50s: Vec<f64> = runs
        .iter()
        .map(|r| r["lat.raw.p50"].as_f64().unwrap())
        .collect();
    let med = m["lat.raw.p50"].as_f64().unwrap();
    assert!(p50s.contains(&med), "{med} not in {p50s:?}");
    assert!(shm_left(pid).is_empty());
}
