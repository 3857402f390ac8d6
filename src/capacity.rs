//! The size guard of topic creation (issue 11, defect 8).
//!
//! A tmpfs may be larger than the memory that backs it (a 24 GiB machine
//! with a 24 GiB `/dev/shm` is the default), so `posix_fallocate` alone does
//! not protect the host: it allocates until the machine runs out of memory.
//! Before allocating anything, [`check`] compares the topic's total size
//! (meta region plus every partition region) with
//!
//! * the free space of `/dev/shm` (`statvfs`), and
//! * [`MEMORY_SHARE_PERCENT`] % of the memory available: `MemAvailable`, or
//!   the room left under the cgroup's memory limit if that is smaller,
//!
//! and refuses with [`Error::NoSpace`] naming the figures, unless the
//! caller forced the size ([`crate::TopicManager::force_size`],
//! `shmq create --force`).

use crate::error::{Error, Result};
use crate::os::{self, MemoryFigures};

/// The largest share of the available memory (`MemAvailable`, or the
/// cgroup's remaining room if smaller) that one topic may take without
/// [`crate::TopicManager::force_size`]: 50 %.
pub const MEMORY_SHARE_PERCENT: u64 = 50;

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_string(), gib)
}

/// Whether a topic of `need` bytes in all (region `region`) may be created
/// given `figures`. Figures the kernel did not give are not checked.
pub(crate) fn verdict(region: &str, need: u64, figures: MemoryFigures) -> Result<()> {
    let available = match (figures.mem_available, figures.cgroup_free) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    };
    let allowed = available.map(|a| a / 100 * MEMORY_SHARE_PERCENT);
    let over_shm = figures.shm_free.is_some_and(|free| need > free);
    let over_mem = allowed.is_some_and(|a| need > a);
    if !over_shm && !over_mem {
        return Ok(());
    }
    let why = if over_shm {
        format!(
            "the topic needs {} but /dev/shm has {} free (of {})",
            gib(need),
            fmt_opt(figures.shm_free),
            fmt_opt(figures.shm_size)
        )
    } else {
        format!(
            "the topic needs {} but a topic may take at most {MEMORY_SHARE_PERCENT}% of the memory available, {}",
            gib(need),
            fmt_opt(allowed)
        )
    };
    Err(Error::NoSpace {
        region: region.to_string(),
        bytes: usize::try_from(need).unwrap_or(usize::MAX),
        detail: format!(
            "{why} (MemAvailable {}, cgroup room {}, /dev/shm free {}); nothing was allocated. \
             Use fewer or smaller partitions, or force the size (shmq create --force, \
             TopicManager::force_size) if you know the memory is there",
            fmt_opt(figures.mem_available),
            figures
                .cgroup_free
                .map_or_else(|| "unlimited".to_string(), gib),
            fmt_opt(figures.shm_free),
        ),
    })
}

/// [`verdict`] with the host's figures now.
pub(crate) fn check(region: &str, need: u64) -> Result<()> {
    verdict(region, need, os::memory_figures())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn figures(shm_free: u64, mem: u64, cgroup: Option<u64>) -> MemoryFigures {
        MemoryFigures {
            shm_free: Some(shm_free),
            shm_size: Some(shm_free),
            mem_available: Some(mem),
            cgroup_free: cgroup,
        }
    }

    #[test]
    fn a_topic_larger_than_half_the_available_memory_is_refused_with_the_figures() {
        // The machine: 24 GiB RAM, a 24 GiB /dev/shm, 6 x 4 GiB.
        let f = figures(24 * GIB, 23 * GIB, None);
        let err = verdict("shmq.n.t.meta", 24 * GIB, f).unwrap_err();
        let Error::NoSpace { bytes, detail, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*bytes as u64, 24 * GIB);
        let msg = err.to_string();
        for want in [
            "24.0 GiB",
            "50%",
            "11.5 GiB",
            "MemAvailable 23.0 GiB",
            "--force",
        ] {
            assert!(msg.contains(want), "{want:?} missing from: {msg}");
        }
        assert!(detail.contains("nothing was allocated"), "{detail}");
        verdict("shmq.n.t.meta", 11 * GIB, f).unwrap();
    }

    #[test]
    fn the_cgroup_limit_and_the_tmpfs_size_also_bound_a_topic() {
        let f = figures(24 * GIB, 23 * GIB, Some(2 * GIB));
        let msg = verdict("m", 2 * GIB, f).unwrap_err().to_string();
        assert!(
            msg.contains("cgroup room 2.0 GiB") && msg.contains("1024.0 MiB"),
            "{msg}"
        );
        verdict("m", GIB - 4096, f).unwrap();
        let f = figures(GIB, 100 * GIB, None);
        let msg = verdict("m", 2 * GIB, f).unwrap_err().to_string();
        assert!(msg.contains("/dev/shm has 1.0 GiB free"), "{msg}");
        // Unknown figures are not held against the topic.
        verdict("m", 1 << 50, MemoryFigures::default()).unwrap();
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        let meminfo = "MemTotal:       24683912 kB\nMemFree:        24292812 kB\nMemAvailable:   24358052 kB\n";
        assert_eq!(
            os::parse_meminfo_available(meminfo),
            Some(24_358_052 * 1024)
        );
        assert_eq!(os::parse_meminfo_available("MemFree: 1 kB\n"), None);
        assert_eq!(os::parse_cgroup_limit("max\n"), None);
        assert_eq!(os::parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(os::parse_cgroup_limit("1073741824\n"), Some(GIB));
        // The host's figures can be read here (Linux with /proc).
        let f = os::memory_figures();
        assert!(f.shm_free.is_some() && f.mem_available.is_some(), "{f:?}");
    }
}
