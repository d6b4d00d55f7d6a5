//! CPU time of processes from `/proc/<pid>/stat` (utime + stime), the most stable
//! figure on shared cores: it counts what the process itself ran, not how long it
//! waited for a core.

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of `pid` in milliseconds; 0 when it cannot be read.
pub fn milliseconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at `state`
    // (field 3); utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0) as f64
    };
    (ticks(11) + ticks(12)) * 1000.0 / TICKS_PER_SECOND
}

/// Sum of [`milliseconds`] over `pids`.
pub fn total_milliseconds(pids: &[u32]) -> f64 {
    pids.iter().map(|&pid| milliseconds(pid)).sum()
}

/// Process ids whose parent is `parent` (from `/proc/*/stat`).
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
