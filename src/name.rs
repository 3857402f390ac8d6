//! Name validation and the derivation of region names.
//!
//! Users name namespaces, topics and groups; shmq derives every region name
//! from them, never taking a path from the user:
//!
//! | region | name in `/dev/shm` |
//! |---|---|
//! | topic meta | `shmq.<ns>.<topic>.meta` |
//! | partition `N` | `shmq.<ns>.<topic>.p<N>` |
//! | process liveness token | `shmq.<ns>._tok.<id as 8 hex digits>` |
//!
//! Names use `[A-Za-z0-9_-]` (no `.`, which separates the parts, and no
//! leading `_`, reserved for shmq's own files).

use crate::error::Error;

/// Longest namespace name.
pub const NAMESPACE_MAX: usize = 32;
/// Longest topic name.
pub const TOPIC_MAX: usize = 64;
/// Longest group name.
pub const GROUP_MAX: usize = crate::layout::GROUP_NAME_MAX;

/// Prefix of every region shmq creates.
pub const PREFIX: &str = "shmq";

fn validate(what: &'static str, name: &str, max: usize) -> Result<(), Error> {
    let bad = |reason: String| Error::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if name.len() > max {
        return Err(bad(format!(
            "it is {} bytes long; the limit is {max}",
            name.len()
        )));
    }
    if name.starts_with('_') {
        return Err(bad("a leading '_' is reserved for shmq's own files".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(bad(format!(
            "{c:?} is not allowed; use letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

/// Check a namespace name.
pub fn validate_namespace(name: &str) -> Result<(), Error> {
    validate("namespace", name, NAMESPACE_MAX)
}

/// Check a topic name.
pub fn validate_topic(name: &str) -> Result<(), Error> {
    validate("topic", name, TOPIC_MAX)
}

/// Check a consumer-group name.
pub fn validate_group(name: &str) -> Result<(), Error> {
    validate("group", name, GROUP_MAX)
}

/// Prefix shared by every region of a namespace (`shmq.<ns>.`).
pub fn namespace_prefix(ns: &str) -> String {
    format!("{PREFIX}.{ns}.")
}

/// Name of a topic's meta region.
pub fn meta_region(ns: &str, topic: &str) -> String {
    format!("{PREFIX}.{ns}.{topic}.meta")
}

/// Name of a partition region.
pub fn partition_region(ns: &str, topic: &str, partition: u32) -> String {
    format!("{PREFIX}.{ns}.{topic}.p{partition}")
}

/// Prefix of a topic's regions (meta and partitions).
pub fn topic_prefix(ns: &str, topic: &str) -> String {
    format!("{PREFIX}.{ns}.{topic}.")
}

/// Name of a liveness-token file.
pub fn token_file(ns: &str, id: u32) -> String {
    format!("{PREFIX}.{ns}._tok.{id:08x}")
}

/// Prefix of a namespace's token files.
pub fn token_prefix(ns: &str) -> String {
    format!("{PREFIX}.{ns}._tok.")
}

/// What a region name in a namespace refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionName {
    /// `shmq.<ns>.<topic>.meta`
    Meta {
        /// Topic name.
        topic: String,
    },
    /// `shmq.<ns>.<topic>.p<N>`
    Partition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// `shmq.<ns>._tok.<id>`
    Token {
        /// Token id.
        id: u32,
    },
}

/// Parse a file name in `/dev/shm` that belongs to namespace `ns`.
pub fn parse(ns: &str, file: &str) -> Option<RegionName> {
    let rest = file.strip_prefix(&namespace_prefix(ns))?;
    if let Some(id) = rest.strip_prefix("_tok.") {
        return u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id.len() == 8)
            .map(|id| RegionName::Token { id });
    }
    let (topic, suffix) = rest.rsplit_once('.')?;
    validate_topic(topic).ok()?;
    if suffix == "meta" {
        return Some(RegionName::Meta {
            topic: topic.to_string(),
        });
    }
    let n = suffix.strip_prefix('p')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    let partition = n.parse().ok()?;
    Some(RegionName::Partition {
        topic: topic.to_string(),
        partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            parse("ns", &meta_region("ns", "orders")),
            Some(RegionName::Meta {
                topic: "orders".into()
            })
        );
        assert_eq!(
            parse("ns", &partition_region("ns", "orders", 12)),
            Some(RegionName::Partition {
                topic: "orders".into(),
                partition: 12
            })
        );
        assert_eq!(
            parse("ns", &token_file("ns", 0xabc)),
            Some(RegionName::Token { id: 0xabc })
        );
        assert_eq!(parse("ns", "shmq.other.orders.meta"), None);
        assert_eq!(parse("ns", "shmq.ns.orders.p01"), None);
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        for bad in ["", "a.b", "a/b", "_x", "é", &"x".repeat(65)] {
            let err = validate_topic(bad).unwrap_err().to_string();
            assert!(err.contains("topic"), "{err}");
        }
        validate_topic("orders-v2_eu").unwrap();
    }
}
