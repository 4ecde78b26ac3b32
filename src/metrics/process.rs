//! The exporter's own process metrics (`process_*`, as every Prometheus client library names
//! them), read from /proc on each scrape: a few small files, no allocation worth measuring.
//! On a system without /proc the families are simply absent. The page size and the clock tick
//! come from the system (`sysconf`): 16K and 64K pages exist.

use super::Families;

/// The units /proc/self/stat counts in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Units {
    pub ticks_per_second: f64,
    pub page_size: f64,
}

impl Units {
    /// This system's, read once.
    pub fn system() -> Units {
        static UNITS: std::sync::OnceLock<Units> = std::sync::OnceLock::new();
        *UNITS.get_or_init(|| {
            // SAFETY: sysconf only reads system configuration.
            let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
            Units {
                ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
                page_size: if page > 0 { page as f64 } else { 4096.0 },
            }
        })
    }
}

/// Fields of /proc/self/stat after the command name: (state is field 3).
#[derive(Debug, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    pub start_ticks: u64,
    pub virtual_bytes: f64,
    pub resident_bytes: f64,
}

pub fn parse_stat(text: &str, units: Units) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field n is fields[n - 3].
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / units.ticks_per_second,
        start_ticks: num(22)?,
        virtual_bytes: num(23)? as f64,
        resident_bytes: num(24)? as f64 * units.page_size,
    })
}

/// Boot time and the fd limit do not change while we run: read once.
fn boot_time() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(read_boot_time)
}

fn read_boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn max_fds() -> Option<f64> {
    static MAX: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *MAX.get_or_init(read_max_fds)
}

fn read_max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub fn families(f: &mut Families) {
    let units = Units::system();
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t, units)) else {
        return;
    };
    f.float_counter(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        vec![],
        stat.cpu_seconds,
    );
    f.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", vec![], stat.resident_bytes);
    f.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", vec![], stat.virtual_bytes);
    if let Some(btime) = boot_time() {
        f.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            vec![],
            btime as f64 + stat.start_ticks as f64 / units.ticks_per_second,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        f.gauge("process_open_fds", "Number of open file descriptors.", vec![], dir.count() as f64);
    }
    if let Some(max) = max_fds() {
        f.gauge("process_max_fds", "Maximum number of open file descriptors.", vec![], max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_tricky_command_name() {
        let line = "4242 (pgha (x) y) S 1 2 3 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 12345 104857600 2560 18446744073709551615";
        let units = Units { ticks_per_second: 100.0, page_size: 4096.0 };
        let s = parse_stat(line, units).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_ticks, 12345);
        assert_eq!(s.virtual_bytes, 104857600.0);
        assert_eq!(s.resident_bytes, 2560.0 * 4096.0);
        let big_pages = parse_stat(line, Units { ticks_per_second: 250.0, page_size: 65536.0 }).unwrap();
        assert_eq!((big_pages.cpu_seconds, big_pages.resident_bytes), (1.2, 2560.0 * 65536.0));
        assert!(parse_stat("garbage", units).is_none());
        assert!(parse_stat("1 (x) S 1", units).is_none());
        assert!(parse_stat("1 (x)", units).is_none(), "ends at the command name: no panic");
        assert!(parse_stat(")", units).is_none());
    }

    #[test]
    fn own_process_reads_plausible_figures() {
        let s = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap(), Units::system()).unwrap();
        assert!(Units::system().page_size >= 4096.0);
        assert!(s.resident_bytes > 100_000.0, "{s:?}");
        assert!(boot_time().unwrap() > 1_500_000_000);
    }
}
