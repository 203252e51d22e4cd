//! Helpers the embedding benchmarks share.

/// Runs `run` when cargo bench passes `--bench`; anything else (e.g. `cargo test --all-targets`)
/// only checks that the benchmark builds.
pub fn main_with<E: std::fmt::Display>(name: &str, run: impl FnOnce() -> Result<(), E>) {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: run with `cargo bench --bench {name}`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("{name} bench: {e}");
        std::process::exit(1);
    }
}

/// The `p` quantile (0..=1) of `sorted` by nearest rank; zero when empty.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted.get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
}

/// The 1, 5 and 15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// VmRSS of this process in KiB (0 when /proc is unavailable).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
