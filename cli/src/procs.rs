//! What the benchmarks and the load harness read of other processes on this machine: resident
//! memory, its high-water mark, and CPU time, from `/proc` (Linux).

use anyhow::{bail, Context};

/// `NAME=PID` arguments, checked to name processes whose memory can be read.
pub fn parse_watch(specs: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    specs
        .iter()
        .map(|s| {
            let (name, pid) = s
                .split_once('=')
                .with_context(|| format!("--watch {s:?}: expected NAME=PID"))?;
            let pid: u32 = pid
                .parse()
                .with_context(|| format!("--watch {s:?}: {pid:?} is not a process id"))?;
            if rss_of(pid).is_none() {
                bail!("--watch {s:?}: no process {pid} whose memory can be read");
            }
            Ok((name.to_owned(), pid))
        })
        .collect()
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resident memory (VmRSS), bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// The resident high-water mark (VmHWM) since the process started or since
/// [`reset_peak_rss`], bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// Resets the process's resident high-water mark to its current RSS (`clear_refs` 5), so
/// that each round of a benchmark has a peak of its own. Needs to own the process (or root).
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// CPU seconds (user + system, all threads) the process has used.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: the fields counted start after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name and state.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_of(me).unwrap() > 0);
        assert!(peak_rss_of(me).unwrap() >= rss_of(me).unwrap() / 2);
        // Burn a little CPU: the count goes up from a sane value.
        let before = cpu_seconds_of(me).unwrap();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds_of(me).unwrap();
        assert!(before >= 0.0 && after > before, "{before} → {after}");
    }

    #[test]
    fn watch_specs_are_checked() {
        assert!(parse_watch(&["gateway".into()]).is_err());
        assert!(parse_watch(&["gateway=abc".into()]).is_err());
        let me = std::process::id();
        let ok = parse_watch(&[format!("me={me}")]).unwrap();
        assert_eq!(ok, [("me".to_owned(), me)]);
    }
}
