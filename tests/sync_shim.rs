//! Every atomic the protocols use must come from the sync shim (`src/sync.rs`),
//! or the loom models would check different code from what ships: no file
//! under `src/` other than `src/sync.rs` may name `std::sync::atomic` or
//! `core::sync::atomic` (including through a `use std::sync::{atomic, ..}`
//! group).

use std::fs;
use std::path::{Path, PathBuf};

/// The one file allowed to name the std atomics.
const SHIM: &str = "sync.rs";

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The 1-based line numbers of `source` that name the std/core atomics.
fn offending_lines(source: &str) -> Vec<usize> {
    // Comments are dropped, then whitespace, so `std :: sync :: atomic` and
    // multi-line `use` groups are caught; `line_of[i]` maps back.
    let mut chars = Vec::new();
    let mut line_of = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for c in line.chars().filter(|c| !c.is_whitespace()) {
            chars.push(c);
            line_of.push(i + 1);
        }
    }
    let find_all = |pat: &str| -> Vec<usize> {
        let p: Vec<char> = pat.chars().collect();
        (0..chars.len().saturating_sub(p.len() - 1))
            .filter(|&i| chars[i..i + p.len()] == p[..])
            .collect()
    };
    let mut hits = Vec::new();
    for root in ["std::sync::", "core::sync::"] {
        for at in find_all(root) {
            let rest = at + root.chars().count();
            let named = if chars.get(rest) == Some(&'{') {
                // A `use std::sync::{..}` group: look inside, to its brace.
                let mut depth = 0;
                let mut inner = String::new();
                for &c in &chars[rest..] {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    inner.push(c);
                    if depth == 0 {
                        break;
                    }
                }
                inner.contains("atomic")
            } else {
                chars[rest..].starts_with(&['a', 't', 'o', 'm', 'i', 'c'])
            };
            if named {
                hits.push(line_of[at]);
            }
        }
    }
    hits.sort_unstable();
    hits.dedup();
    hits
}

#[test]
fn the_checker_catches_every_spelling() {
    let bad = [
        "use std::sync::atomic::AtomicU64;",
        "use core::sync::atomic::{fence, Ordering};",
        "let x = std::sync::atomic::AtomicU32::new(0);",
        "use std::sync::{Arc, atomic::AtomicBool};",
        "use std::sync::{\n    Arc,\n    atomic::{AtomicU64, Ordering},\n};",
        "use std :: sync :: atomic :: Ordering;",
    ];
    for src in bad {
        assert!(!offending_lines(src).is_empty(), "not caught: {src}");
    }
    let good = [
        "use crate::sync::{AtomicU64, Ordering};",
        "use std::sync::{Arc, Mutex};",
        "// protocol code never names std::sync::atomic directly",
        "use std::sync::{\n    Arc,\n    Mutex,\n};\nlet atomic = 1;",
    ];
    for src in good {
        assert_eq!(
            offending_lines(src),
            Vec::<usize>::new(),
            "false alarm: {src}"
        );
    }
}

#[test]
fn protocol_code_uses_only_the_sync_shim() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("ring.rs")) && files.iter().any(|f| f.ends_with(SHIM)),
        "did not find the sources under {}",
        src.display()
    );
    let mut offenders = Vec::new();
    for file in &files {
        if file == &src.join(SHIM) {
            continue;
        }
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for line in offending_lines(&text) {
            offenders.push(format!("{}:{line}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "protocol code must take its atomics from `crate::sync` (src/sync.rs), \
         not name std/core atomics directly:\n  {}",
        offenders.join("\n  ")
    );
}
