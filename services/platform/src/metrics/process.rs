//! The standard `process_*` metrics of this process, read from `/proc/self` on each scrape
//! (Linux; elsewhere there are none): CPU seconds, resident and virtual memory, open and
//! allowed file descriptors, start time and threads, in Prometheus' text format.

use std::fmt::Write as _;
use std::path::Path;

/// What `/proc/self` says about this process at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Clock ticks per second when the kernel's auxiliary vector does not say (`USER_HZ` is 100
/// on every Linux architecture Mailroom is built for).
const DEFAULT_CLOCK_TICKS: u64 = 100;
/// `AT_CLKTCK` in the auxiliary vector: the unit of `/proc/<pid>/stat`'s times.
const AT_CLKTCK: u64 = 17;

impl ProcessSample {
    /// Reads `/proc/self`; `None` where there is no `/proc` (not Linux) or it cannot be read.
    pub fn read() -> Option<Self> {
        Self::read_from(Path::new("/proc"))
    }

    fn read_from(proc: &Path) -> Option<Self> {
        let stat = std::fs::read_to_string(proc.join("self/stat")).ok()?;
        let boot_time = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|text| boot_time(&text))?;
        let ticks = std::fs::read(proc.join("self/auxv"))
            .ok()
            .and_then(|auxv| clock_ticks(&auxv))
            .unwrap_or(DEFAULT_CLOCK_TICKS);
        let status = std::fs::read_to_string(proc.join("self/status")).ok()?;
        let fields = StatFields::parse(&stat)?;
        let kib = |key: &str| status_value(&status, key).map(|n| n * 1024);
        Some(Self {
            cpu_seconds: (fields.utime + fields.stime) as f64 / ticks as f64,
            resident_bytes: kib("VmRSS:").unwrap_or(0),
            virtual_bytes: kib("VmSize:").unwrap_or(fields.vsize),
            threads: status_value(&status, "Threads:").unwrap_or(fields.threads),
            start_time_seconds: boot_time as f64 + fields.start_ticks as f64 / ticks as f64,
            open_fds: std::fs::read_dir(proc.join("self/fd"))
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: std::fs::read_to_string(proc.join("self/limits"))
                .ok()
                .and_then(|text| max_open_files(&text)),
        })
    }

    /// The sample in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes as f64,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes as f64,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            self.threads as f64,
        );
        if let Some(open) = self.open_fds {
            metric(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open as f64,
            );
        }
        if let Some(max) = self.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max as f64,
            );
        }
        out
    }
}

/// The fields of `/proc/<pid>/stat` these metrics use.
struct StatFields {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
}

impl StatFields {
    /// The command name (field 2) is in parentheses and may itself hold spaces and `)`: the
    /// fields are counted from the last `)`, where field 3 (state) begins.
    fn parse(stat: &str) -> Option<Self> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Field n of proc(5) is fields[n - 3].
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// A `Key:   value [kB]` line of `/proc/<pid>/status`.
fn status_value(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// `AT_CLKTCK` out of `/proc/self/auxv` (pairs of native-endian machine words).
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = chunk.try_into().ok()?;
        Some(usize::from_ne_bytes(bytes) as u64)
    };
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let (key, value) = pair.split_at(WORD);
        (word(key)? == AT_CLKTCK)
            .then(|| word(value))
            .flatten()
            .filter(|ticks| *ticks > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a `)` in it, as a process may name itself.
        let stat = "4242 (my) proc) S 1 4242 4242 0 -1 4194560 3000 0 0 0 250 50 0 0 20 0 7 0 \
                    123456 104857600 2560 18446744073709551615";
        let fields = StatFields::parse(stat).expect("parsed");
        assert_eq!((fields.utime, fields.stime), (250, 50));
        assert_eq!(fields.threads, 7);
        assert_eq!(fields.start_ticks, 123456);
        assert_eq!(fields.vsize, 104_857_600);
    }

    #[test]
    fn this_process_is_read_from_proc_self() {
        if !Path::new("/proc/self/stat").exists() {
            return; // not Linux
        }
        let before = ProcessSample::read().expect("/proc/self is readable");
        // Burn CPU until the kernel has counted at least one clock tick of it
        // (on a loaded machine 50 ms of wall time can be less than one tick of
        // CPU), and open a file: both must show.
        let mut spin = 0u64;
        let started = std::time::Instant::now();
        let held = std::fs::File::open("/proc/self/stat").expect("opened");
        let after = loop {
            for _ in 0..100_000 {
                spin = spin.wrapping_add(std::hint::black_box(1));
            }
            let sample = ProcessSample::read().expect("/proc/self is readable");
            if sample.cpu_seconds > before.cpu_seconds
                || started.elapsed() > std::time::Duration::from_secs(20)
            {
                break sample;
            }
        };
        drop(held);
        assert!(spin > 0);
        assert!(after.cpu_seconds >= before.cpu_seconds);
        assert!(after.cpu_seconds > 0.0, "{after:?}");
        assert!(after.resident_bytes > 1024 * 1024, "{after:?}");
        assert!(after.virtual_bytes >= after.resident_bytes, "{after:?}");
        assert!(after.threads >= 1, "{after:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            after.start_time_seconds <= now + 1.0 && after.start_time_seconds > now - 86_400.0,
            "the test process started within the last day: {after:?}"
        );
        let open = after.open_fds.expect("fds counted");
        assert!(open >= 4, "stdin/out/err and the file held: {after:?}");
        assert!(after.max_fds.expect("limit read") >= open, "{after:?}");

        let text = after.render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(&format!("{name} "))),
                "{name} missing from\n{text}"
            );
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }

    #[test]
    fn clock_ticks_come_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (key, value) in [(6usize, 4096usize), (AT_CLKTCK as usize, 250), (0, 0)] {
            auxv.extend_from_slice(&key.to_ne_bytes());
            auxv.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(clock_ticks(&auxv), Some(250));
        assert_eq!(clock_ticks(&auxv[..16.min(auxv.len())]), None);
    }
}
