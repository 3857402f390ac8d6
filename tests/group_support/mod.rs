//! Helpers for the consumer-group, DLQ and backpressure process tests: a
//! child process whose tagged stdout lines (any key, any order) are read on a
//! helper thread, and a stdin "stop" flag for children.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, CHILD_DEADLINE};

/// A child test process and the tagged lines it printed.
pub struct Kid {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: common::ChildLines,
    done: bool,
}

impl Kid {
    /// Start this test binary as a child playing `role`.
    pub fn spawn(role: &str, args: &[&str]) -> Kid {
        let mut child = common::spawn_child(role, args);
        let stdin = child.stdin.take();
        let lines = common::ChildLines::new(&mut child);
        Kid {
            child,
            stdin,
            lines,
            done: false,
        }
    }

    /// The next tagged line, waiting up to `timeout`; `None` on timeout or
    /// once the child closed its stdout.
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        self.lines.next(timeout)
    }

    /// Every tagged line available right now.
    pub fn drain(&self) -> Vec<(String, String)> {
        self.lines.drain()
    }

    /// Wait for a line with `key` (other lines go to `other`); panics after
    /// [`CHILD_DEADLINE`].
    pub fn wait_for(&self, key: &str, mut other: impl FnMut(&str, &str)) -> String {
        let deadline = Instant::now() + CHILD_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.next(left) {
                Some((k, v)) if k == key => return v,
                Some((k, v)) => other(&k, &v),
                None => panic!("child {} never said {key}", self.child.id()),
            }
        }
    }

    /// Send a line to the child's stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        common::send_line(stdin, line);
    }

    /// `kill -9` the child and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill child");
        self.child.wait().expect("reap child");
        self.done = true;
    }

    /// Wait for the child to exit successfully.
    pub fn wait_success(&mut self) {
        common::wait_success(&mut self.child);
        self.done = true;
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: a flag raised when the parent sends `stop` (or closes stdin).
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        while let Some(line) = common::line_from_parent() {
            if line == "stop" {
                break;
            }
        }
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Whether the flag from [`stop_flag`] is up.
pub fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// Comma-separated list.
pub fn csv<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse a comma-separated list.
pub fn parse_csv<T: std::str::FromStr>(s: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("csv item"))
        .collect()
}

/// Poll `cond` every few milliseconds until it holds; panics with `what`
/// after [`CHILD_DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + CHILD_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
