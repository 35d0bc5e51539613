//! What the benchmarks share: driving an operation from many tasks for a while, and the
//! throughput and latency percentiles that come out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One workload's outcome.
pub struct Stats {
    pub name: String,
    pub calls: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Stats {
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
    pub fn print(&self) {
        println!(
            "{:<44} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>7}",
            self.name,
            self.calls,
            self.throughput(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.errors
        );
    }
}

/// Runs `op` from `concurrency` tasks for `duration`; `op(i)` is one call.
pub async fn drive<F, Fut>(name: &str, concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed().as_micros() as u64);
                i += concurrency;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies_us.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        name: name.to_owned(),
        calls: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
    }
}

/// Runs `op` at a fixed `rate` per second for `duration`, spread over `workers` tasks.
///
/// A call that starts late because the worker's previous call overran its slot is measured
/// from when it was due, so a server that falls behind shows the queueing in its percentiles
/// (no coordinated omission). A call that starts late only because tokio's timer wakes on
/// millisecond ticks is measured from when it was sent: that lag is the load generator's.
pub async fn drive_at_rate<F, Fut>(
    name: &str,
    rate: f64,
    workers: usize,
    duration: Duration,
    op: F,
) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let per_worker = Duration::from_secs_f64(workers as f64 / rate);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let offset = per_worker.mul_f64(worker as f64 / workers as f64);
            let mut due = started + offset;
            let mut i = worker;
            let mut previous_end = started;
            while due < started + duration {
                tokio::time::sleep_until(due.into()).await;
                let from = if previous_end > due {
                    due
                } else {
                    Instant::now()
                };
                if !op(i).await {
                    errors += 1;
                }
                previous_end = Instant::now();
                latencies.push(previous_end.duration_since(from).as_micros() as u64);
                due += per_worker;
                i += workers;
            }
            (latencies, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies_us.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        name: name.to_owned(),
        calls: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
    }
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
