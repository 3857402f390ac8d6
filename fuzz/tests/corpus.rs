//! Replays every seed input of `fuzz/corpus/<target>/` through its harness
//! (an ordinary test on the stable toolchain, no instrumentation), then runs
//! each harness over a few thousand inputs mutated from the seeds with a fixed
//! seed: a quick, reproducible smoke pass between fuzzing runs.

use std::path::PathBuf;

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 4] = [
    ("region", shmq_fuzz::region),
    ("topic", shmq_fuzz::topic),
    ("dlq_envelope", shmq_fuzz::dlq_envelope),
    ("headers", shmq_fuzz::headers),
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read seed"))
        .collect()
}

/// Removes the harnesses' regions even if a harness panics.
struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        shmq_fuzz::cleanup();
    }
}

#[test]
fn seed_corpus_replays_cleanly() {
    let _c = Cleanup;
    for (target, harness) in TARGETS {
        let inputs = seeds(target);
        assert!(!inputs.is_empty(), "no seeds for {target}");
        for input in &inputs {
            harness(input);
        }
    }
}

#[test]
fn mutated_seeds_run_cleanly() {
    let _c = Cleanup;
    let rounds: usize = std::env::var("SHMQ_FUZZ_SMOKE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (target, harness) in TARGETS {
        let inputs = seeds(target);
        for i in 0..rounds {
            let mut input = inputs[i % inputs.len()].clone();
            if input.is_empty() {
                input.push(0);
            }
            // Flip, overwrite or append a few bytes.
            for _ in 0..1 + next() % 4 {
                let r = next();
                let at = (r >> 8) as usize % input.len();
                match r % 3 {
                    0 => input[at] ^= 1 << ((r >> 40) % 8),
                    1 => input[at] = (r >> 48) as u8,
                    _ => input.extend_from_slice(&next().to_le_bytes()[..3]),
                }
            }
            harness(&input);
        }
    }
}

/// Regenerate the seed corpus:
/// `cargo test -p shmq-fuzz --test corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let _c = Cleanup;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    // region: the snapshot's real regions, as they are and with only the
    // identity kept (everything after the first line zeroed).
    for (bp, tag) in [(false, "ow"), (true, "bp")] {
        let files = shmq_fuzz::snapshot_files(bp).expect("snapshot");
        for (i, f) in files.iter().enumerate() {
            let (flag, kind) = if i == 0 { (1u8, "meta") } else { (0, "part") };
            if i > 1 {
                continue;
            }
            let mut seed = vec![flag];
            seed.extend_from_slice(f);
            put("region", &format!("{kind}-{tag}"), &seed);
            let mut bare = vec![flag | 2];
            bare.extend_from_slice(&f[..64]);
            put("region", &format!("{kind}-{tag}-identity"), &bare);
        }
    }
    // topic: the snapshots untouched, and one damage of each kind.
    let patch = |r: u8, word: u16, v: u64| {
        let mut p = vec![r];
        p.extend_from_slice(&word.to_le_bytes());
        p.extend_from_slice(&v.to_le_bytes());
        p
    };
    let cursor = (std::mem::offset_of!(shmq::protocol::layout::PartitionHeader, cursor) / 8) as u16;
    let writer = (std::mem::offset_of!(shmq::protocol::layout::PartitionHeader, writer) / 8) as u16;
    let slot0 = (shmq::protocol::layout::PARTITION_HEADER / 8) as u16;
    let group0 = (shmq::protocol::layout::META_HEADER / 8) as u16;
    let committed0 = group0 + ((shmq::protocol::layout::LINE * 33) / 8) as u16;
    put("topic", "ow", &[0]);
    put("topic", "bp", &[1]);
    put("topic", "bp-reads-only", &[7]);
    let seeds: [(&str, u8, Vec<u8>); 8] = [
        ("cursor-2p63", 1, patch(1, cursor, 1 << 63)),
        ("cursor-max", 0, patch(1, cursor, u64::MAX)),
        ("writer-garbage", 1, patch(2, writer, 0xdead_beef_0000_0001)),
        ("slot-seq-zero", 1, patch(1, slot0, 0)),
        ("slot-seq-odd", 0, patch(0x41, slot0 + 16, 0xff)),
        ("slot-len-huge", 0, patch(1, slot0 + 1, u64::MAX)),
        ("committed-max", 1, patch(0, committed0, u64::MAX)),
        ("truncated", 0, patch(0x82, 100, 0)),
    ];
    for (name, flags, p) in seeds {
        let mut input = vec![flags];
        input.extend_from_slice(&p);
        put("topic", name, &input);
    }
    // dlq_envelope: a valid envelope with and without a key, and a bad magic.
    let record = shmq::Record {
        partition: 3,
        offset: 42,
        timestamp_ns: 7,
        key: Some(b"user-1".to_vec()),
        value: b"payload".to_vec(),
        headers: Default::default(),
    };
    for (name, rec) in [
        ("keyed", record.clone()),
        (
            "unkeyed",
            shmq::Record {
                key: None,
                ..record.clone()
            },
        ),
    ] {
        let dl = shmq::DeadLetter::new("orders", &rec, 2);
        let key = dl.encode_key();
        let mut input = vec![1, key.len() as u8];
        input.extend_from_slice(&key);
        input.extend_from_slice(&dl.value);
        put("dlq_envelope", name, &input);
        if name == "keyed" {
            input[2] ^= 0xff;
            put("dlq_envelope", "bad-magic", &input);
        }
    }
}
