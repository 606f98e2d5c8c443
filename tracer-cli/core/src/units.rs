//! Numbers as people read them: durations, sizes, counts.
use kstall_common::MIN_POW;

/// Human duration with 3 significant digits: 850ns, 13.0us, 8.21ms, 1.20s.
pub fn duration(ns: u64) -> String {
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "us"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let digits = if value >= 100.0 { 0 } else if value >= 10.0 { 1 } else { 2 };
    format!("{value:.digits$}{unit}")
}

pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n}B"),
        1024..1_048_576 => format!("{:.1}KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1}MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2}GiB", n as f64 / 1_073_741_824.0),
    }
}

/// A percentile: values in the kernel's lowest bucket are only known to be under ~1 us.
pub fn percentile(ns: u64) -> String {
    if ns < 1 << MIN_POW { "<1us".to_string() } else { duration(ns) }
}

/// A statistic (a percentile, the max) of a set of `count` latencies: None for an empty set,
/// whose percentiles are zeros that would read as a measured `0ns`.
pub fn in_set(count: u64, ns: u64) -> Option<u64> {
    (count > 0).then_some(ns)
}

/// A statistic of a set that may be empty, written by `format`; `-` for an empty set.
pub fn or_dash(ns: Option<u64>, format: fn(u64) -> String) -> String {
    ns.map_or("-".to_string(), format)
}

/// A statistic of a set of `count` latencies, written by `format`; `-` for an empty set.
pub fn of_set(count: u64, ns: u64, format: fn(u64) -> String) -> String {
    or_dash(in_set(count, ns), format)
}

/// "s" to make a count's noun plural: `format!("{n} thread{}", plural(n))`.
pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(13_042), "13.0us");
        assert_eq!(duration(8_214_000), "8.21ms");
        assert_eq!(duration(61_064_000), "61.1ms");
        assert_eq!(duration(1_200_000_000), "1.20s");
        assert_eq!(bytes(1_048_576), "1.0MiB");
        assert_eq!(of_set(0, 0, duration), "-");
        assert_eq!(of_set(1, 0, duration), "0ns");
        assert_eq!(of_set(0, 0, percentile), "-");
        assert_eq!(of_set(3, 500, percentile), "<1us");
    }
}
