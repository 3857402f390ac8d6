//! Small helpers shared by the verbs: durations, file modes, clocks, byte
//! encodings and number formatting.

use std::time::Duration;

use base64::Engine as _;

/// Parse `500ms`, `10s`, `2m`, `1h`, `1d` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number with a unit, like 500ms, 10s, 1h")
    })?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("invalid duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Render a duration the way `parse_duration` reads it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Render a duration approximately, for humans (`1h 02m`, `3.2s`, `850ms`).
pub fn fmt_duration_approx(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Render nanoseconds with a unit, to 3 significant digits
/// (`412ns`, `12.3µs`, `1.52ms`, `2.01s`).
pub fn fmt_ns(ns: u64) -> String {
    let three = |v: f64, unit: &str| {
        if v < 10.0 {
            format!("{v:.2}{unit}")
        } else if v < 100.0 {
            format!("{v:.1}{unit}")
        } else {
            format!("{v:.0}{unit}")
        }
    };
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        three(f / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        three(f / 1e6, "ms")
    } else {
        three(f / 1e9, "s")
    }
}

/// Parse a file mode written in octal (`600`, `0640`, `0o644`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "invalid mode {s:?}: expected octal permission bits like 600 or 0640"
        ));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("invalid mode {s:?}: {e}"))?;
    if mode & !0o666 != 0 || mode & 0o600 != 0o600 {
        return Err(format!(
            "invalid mode {s:?}: must include owner read/write (600) and no execute or special bits"
        ));
    }
    Ok(mode)
}

/// `CLOCK_MONOTONIC` in nanoseconds. Unlike `std::time::Instant`, its values
/// are comparable between processes on one host (same clock, same origin).
pub fn mono_ns() -> u64 {
    shmq::protocol::os::monotonic_ns()
}

/// The current Unix time in nanoseconds (`CLOCK_REALTIME`).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// RFC 3339 UTC rendering of Unix nanoseconds (`2024-05-01T12:00:00.123456789Z`).
pub fn fmt_unix_ns(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// How bytes were put into a JSON string.
pub const ENCODING_UTF8: &str = "utf8";
/// How bytes were put into a JSON string.
pub const ENCODING_BASE64: &str = "base64";

/// Bytes as a JSON-friendly string: themselves when valid UTF-8, else
/// standard base64. Returns the string and its encoding name.
pub fn encode_bytes(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), ENCODING_UTF8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            ENCODING_BASE64,
        ),
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Render rows as a left-aligned text table with a header line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            let pad = widths.get(i).copied().unwrap_or(0);
            for _ in c.chars().count()..pad {
                s.push(' ');
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// `1 partition`, `2 partitions`: a count with its noun, pluralised.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with('s') || noun.ends_with('x') || noun.ends_with("ch") {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// Parse a message size for `--size`: a number of bytes in `min ..= max`.
/// `carries` says what a message must hold (why `min`), for the error.
pub fn parse_size_in(s: &str, min: usize, max: usize, carries: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number of bytes"))?;
    if !(min..=max).contains(&n) {
        return Err(format!(
            "size {n}: must be {min} ..= {max} bytes ({carries})"
        ));
    }
    Ok(n)
}

/// A byte count for people: `512 B`, `35.1 KiB`, `4.0 MiB`, `1.50 GiB`.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let x = n as f64;
    if n < KIB {
        format!("{n} B")
    } else if n < MIB {
        format!("{:.1} KiB", x / KIB as f64)
    } else if n < GIB {
        format!("{:.1} MiB", x / MIB as f64)
    } else {
        format!("{:.2} GiB", x / GIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("10x").unwrap_err().contains("unit"));
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn plurals_read_well() {
        assert_eq!(plural(1, "live process"), "1 live process");
        assert_eq!(plural(0, "live process"), "0 live processes");
        assert_eq!(plural(2, "partition"), "2 partitions");
    }

    #[test]
    fn durations_render_back() {
        for s in ["500ms", "10s", "2m", "1h"] {
            assert_eq!(fmt_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_mode("0o666").unwrap(), 0o666);
        assert!(parse_mode("755").is_err());
        assert!(parse_mode("400").is_err());
        assert!(parse_mode("68").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn bytes_encode() {
        assert_eq!(encode_bytes(b"hi"), ("hi".to_string(), ENCODING_UTF8));
        assert_eq!(
            encode_bytes(&[0xff, 0x00]),
            ("/wA=".to_string(), ENCODING_BASE64)
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(fmt_ns(412), "412ns");
        assert_eq!(fmt_ns(12_300), "12.3µs");
        assert_eq!(fmt_ns(1_520_000), "1.52ms");
        assert_eq!(fmt_ns(250_000_000), "250ms");
        assert!(mono_ns() > 0);
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\nxyz  1\n");
    }

    #[test]
    fn counts_and_sizes_read_well() {
        assert_eq!(plural(1, "partition"), "1 partition");
        assert_eq!(plural(0, "partition"), "0 partitions");
        assert_eq!(plural(4, "message"), "4 messages");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(35_968), "35.1 KiB");
        assert_eq!(human_bytes(4 << 20), "4.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.50 GiB");
    }
}
