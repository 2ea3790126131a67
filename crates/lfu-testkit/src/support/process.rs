//! What a local process costs, from /proc: the operator and the Postgres backends serving it
//! run on this machine in the demo and the benchmarks.

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds used (user + system), at the kernel's 10 ms tick.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        let mut spent = 0u64;
        for i in 0..30_000_000u64 {
            spent = spent.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(spent);
        assert!(cpu_seconds(me as i32).is_some_and(|s| s > 0.0));
        assert_eq!(cpu_seconds(-1), None);
    }
}
