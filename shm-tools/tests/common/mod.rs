//! The `shmq` binary run as a user would run it, in a namespace private to
//! one test that must be left empty: shared by the CLI test binaries.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_shmq");

/// A namespace private to one test; asserts on drop that it left nothing.
/// `.1` names topics the drop deletes first (tests that leave a topic on
/// purpose, e.g. after a child was interrupted).
pub struct Ns(pub String, pub Vec<&'static str>);

impl Ns {
    pub fn new(tag: &str) -> Ns {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "t{}{}{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        );
        assert!(ns.len() <= 32, "namespace {ns} too long");
        Ns(ns, Vec::new())
    }

    /// Delete topic `topic` (if it exists) when the namespace is dropped.
    pub fn deleting_on_drop(mut self, topic: &'static str) -> Ns {
        self.1.push(topic);
        self
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env("SHMQ_NAMESPACE", &self.0).args(args);
        c
    }

    /// Run with `stdin` as input; return the output.
    pub fn run_with(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shmq");
        // A command that fails before reading its input closes the pipe.
        match child.stdin.take().unwrap().write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
        child.wait_with_output().expect("wait for shmq")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, b"")
    }

    /// Run; return the exit code, stdout and stderr.
    pub fn code(&self, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
        let out = self.run_with(args, stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run and require success; return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, b"")
    }

    pub fn ok_with(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run_with(args, stdin);
        assert!(
            out.status.success(),
            "shmq {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run, require exit code `code`, return stderr.
    pub fn fails(&self, args: &[&str], stdin: &[u8], code: i32) -> String {
        let out = self.run_with(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "shmq {args:?}: expected exit code {code}, got {} (stderr: {err})",
            out.status
        );
        err
    }

    pub fn files(&self) -> Vec<String> {
        shm_files(&format!("shmq.{}.", self.0))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        for t in &self.1 {
            let _ = self.cmd(&["delete", t]).output();
        }
        // A `shmq` process that exits while its lease-renewal thread holds
        // the topic for a tick leaves its (dead, unlocked) liveness-token
        // file behind, exactly like a crash; remove those as the supervisor
        // would. Anything else left is a bug.
        // A token can also look held for a moment after its owner is done:
        // a child another test thread is spawning holds a copy of every fd
        // between its fork and its exec. Give such tokens a little while.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut left = self.files();
        loop {
            for f in &left {
                if let Some(shmq::protocol::name::RegionName::Token { id }) =
                    shmq::protocol::name::parse(&self.0, f)
                {
                    if shmq::protocol::token::probe(&self.0, id).is_dead() {
                        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
                    }
                }
            }
            left = self.files();
            let only_tokens = left.iter().all(|f| {
                matches!(
                    shmq::protocol::name::parse(&self.0, f),
                    Some(shmq::protocol::name::RegionName::Token { .. })
                )
            });
            if left.is_empty() || !only_tokens || std::time::Instant::now() > until {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Remove leftovers so one failure does not litter /dev/shm ...
        for f in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
        // ... but a passing test must not have left any.
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left in /dev/shm: {left:?}");
        }
    }
}

pub fn shm_files(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}
