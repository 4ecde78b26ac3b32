//! A fixed-bucket histogram kept by the exporter itself (probe latencies, outages, failover
//! phases) and encoded at scrape time.

/// Probe latencies: 1 ms to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Outages and failover phases: 100 ms to 10 min.
pub const OUTAGE_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); one more than `bounds` for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// (upper bound, per-bucket count), ending with +Inf, as prometheus-client encodes them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds.iter().copied().chain([f64::INFINITY]).zip(self.counts.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_with_inf() {
        let mut h = Hist::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        assert_eq!(h.buckets(), vec![(1.0, 1), (2.0, 1), (f64::INFINITY, 1)]);
        assert_eq!((h.count, h.sum), (3, 11.0));
    }
}
