//! CLI errors and their exit codes (documented in README "CLI").
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also: output pipe closed by the reader) |
//! | 1 | failure: a check failed (demo lost/corrupt records, ...) or an OS error |
//! | 2 | usage: bad arguments, bad name, bad duration (clap also uses 2) |
//! | 3 | topic not found |
//! | 4 | topic already exists (or exists with another configuration) |
//! | 5 | message too large for the topic's slots |
//! | 6 | permission denied |
//! | 7 | partition held by another live producer, or fenced |
//! | 8 | lease expired / topic reclaimed |
//! | 9 | timed out / full |

use std::fmt;

/// A CLI failure: a message for stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    msg: String,
    broken_pipe: bool,
}

impl CliError {
    /// A failure with an explicit exit code.
    pub fn new(code: u8, msg: impl Into<String>) -> Self {
        CliError {
            code,
            msg: msg.into(),
            broken_pipe: false,
        }
    }
    /// Exit code 1.
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::new(1, msg)
    }
    /// Exit code 2.
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(2, msg)
    }
    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
    /// Prefix the message with where it happened (`line 3: ...`), keeping
    /// the exit code.
    pub fn context(mut self, ctx: impl std::fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    /// Whether this is a closed stdout (exit quietly).
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<shmq::Error> for CliError {
    fn from(e: shmq::Error) -> Self {
        use shmq::Error as E;
        let code = match &e {
            E::InvalidName { .. }
            | E::InvalidConfig(_)
            | E::NoSuchPartition { .. }
            | E::NotOwned { .. } => 2,
            E::TopicNotFound { .. } => 3,
            E::TopicExists { .. } | E::ConfigMismatch { .. } => 4,
            E::MessageTooLarge { .. } => 5,
            E::PermissionDenied { .. } => 6,
            E::PartitionHeld { .. } | E::Fenced { .. } | E::NoFreePartitions { .. } => 7,
            E::PartitionLimit { .. } | E::GrowthStalled { .. } => 7,
            E::LeaseExpired { .. } => 8,
            E::Timeout | E::Full { .. } => 9,
            E::GroupNotFound { .. } => 3,
            E::GroupBusy { .. } => 10,
            E::GroupTableFull { .. } | E::MemberTableFull { .. } => 11,
            E::DataDir { .. } => 2,
            E::InvalidHeader(_) => 2,
            _ => 1,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError {
            code: 1,
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
            msg: e.to_string(),
        }
    }
}

/// Result of a CLI command.
pub type CliResult<T = ()> = Result<T, CliError>;
