//! The `process_*` series etcd exports (the Go Prometheus client's process collector):
//! CPU time, open and maximum file descriptors, resident and virtual memory, the
//! address-space limit and the start time, read from `/proc/self` at every scrape.
//!
//! Written here rather than taken from the prometheus crate's `process` feature because
//! that one reports CPU time in whole seconds; the Go client (so etcd and its
//! dashboards) reads it to the clock tick. Linux only: elsewhere the series are absent,
//! and a file of `/proc` that cannot be read leaves its series out of that scrape.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge};

/// Reads the process's figures at each collection.
pub struct ProcessCollector {
    cpu: Counter,
    open_fds: Gauge,
    max_fds: Gauge,
    virtual_bytes: Gauge,
    virtual_max_bytes: Gauge,
    resident_bytes: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
    /// Serializes collections: the CPU counter moves by the difference to the last one.
    collecting: Mutex<()>,
    ticks_per_second: f64,
    page_size: f64,
}

impl ProcessCollector {
    pub fn for_self() -> ProcessCollector {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid metric");
        let c = ProcessCollector {
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("valid metric"),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            virtual_bytes: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            virtual_max_bytes: gauge(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
            ),
            resident_bytes: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ),
            descs: Vec::new(),
            collecting: Mutex::new(()),
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as f64,
        };
        let descs = c
            .metrics()
            .iter()
            .flat_map(|m| m.desc().into_iter().cloned())
            .collect();
        let mut c = c;
        c.descs = descs;
        if let Some(stat) = Stat::read() {
            if let Some(boot) = boot_time() {
                c.start_time
                    .set(boot + stat.start_ticks / c.ticks_per_second);
            }
        }
        c
    }

    fn metrics(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.open_fds,
            &self.max_fds,
            &self.virtual_bytes,
            &self.virtual_max_bytes,
            &self.resident_bytes,
            &self.start_time,
        ]
    }

    fn refresh(&self) {
        if let Some(stat) = Stat::read() {
            let cpu = (stat.utime + stat.stime) / self.ticks_per_second;
            let past = self.cpu.get();
            if cpu > past {
                self.cpu.inc_by(cpu - past);
            }
            self.virtual_bytes.set(stat.vsize);
            self.resident_bytes.set(stat.rss_pages * self.page_size);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Less the descriptor of the directory being read.
            self.open_fds.set(dir.count().saturating_sub(1) as f64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(v) = soft_limit(&limits, "Max open files") {
                self.max_fds.set(v);
            }
            if let Some(v) = soft_limit(&limits, "Max address space") {
                self.virtual_max_bytes.set(v);
            }
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.collecting.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh();
        self.metrics().iter().flat_map(|m| m.collect()).collect()
    }
}

/// The fields of `/proc/self/stat` used here.
struct Stat {
    utime: f64,
    stime: f64,
    start_ticks: f64,
    vsize: f64,
    rss_pages: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so
    /// fields are counted from the last `)`; field 3 (state) is index 0 there.
    fn parse(stat: &str) -> Option<Stat> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |field: usize| -> Option<f64> { f.get(field - 3)?.parse().ok() };
        Some(Stat {
            utime: num(14)?,
            stime: num(15)?,
            start_ticks: num(22)?,
            vsize: num(23)?,
            rss_pages: num(24)?,
        })
    }
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of the `/proc/<pid>/limits` row `name`; "unlimited" as the Go
/// client reports it (the largest u64).
fn soft_limit(limits: &str, name: &str) -> Option<f64> {
    let row = limits.lines().find(|l| l.starts_with(name))?;
    let soft = row[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX as f64)
    } else {
        soft.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_strange_command_name() {
        let line = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    123456 1048576 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let s = Stat::parse(line).expect("parses");
        assert_eq!((s.utime, s.stime), (250.0, 75.0));
        assert_eq!(s.start_ticks, 123456.0);
        assert_eq!(s.vsize, 1048576.0);
        assert_eq!(s.rss_pages, 300.0);
    }

    #[test]
    fn reads_limits_as_the_go_client_does() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                1048576              files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(20000.0));
        assert_eq!(
            soft_limit(limits, "Max address space"),
            Some(u64::MAX as f64)
        );
    }

    #[test]
    fn cpu_time_moves_with_work() {
        let c = ProcessCollector::for_self();
        let cpu = |c: &ProcessCollector| {
            assert_eq!(c.collect().len(), 7, "every series collected");
            c.cpu.get()
        };
        let before = cpu(&c);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(
            cpu(&c) > before,
            "100 ms of spinning did not move the CPU time"
        );
    }
}
