//! Timing helpers shared by the benchmarks: samples, percentiles, and how figures print.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// One operation's samples.
pub struct Timings(pub Vec<Duration>);

impl Timings {
    /// The `p` percentile (0.5 is the median).
    pub fn pct(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// This median over `floor`'s.
    pub fn ratio(&self, floor: &Timings) -> f64 {
        self.pct(0.5).as_secs_f64() / floor.pct(0.5).as_secs_f64()
    }
}

/// Runs `f(i)` `n` times, one after another, timing each.
pub async fn time_each<F, Fut>(n: usize, mut f: F) -> Timings
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i).await;
        out.push(start.elapsed());
    }
    Timings(out)
}

/// A duration in µs below a millisecond, in ms above.
pub fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The runtime every benchmark runs on: two workers, like the machine's two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
