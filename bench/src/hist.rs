//! A small log-linear histogram of `u64` values (nanoseconds here).
//!
//! Values below 128 have their own bucket; above, every power of two is cut
//! into 64 equal sub-buckets, so a bucket is never wider than 1/64 (1.6 %) of
//! its lower bound. 3776 buckets cover the whole `u64` range, 30 KB per
//! histogram; histograms merge by adding buckets. This is all the precision a
//! latency report needs, without pulling in a dependency.

const SUB_BITS: u32 = 7; // 2^7 = 128 linear buckets at the bottom
const HALF: u64 = 1 << (SUB_BITS - 1); // 64 sub-buckets per power of two
const BUCKETS: usize = ((64 - SUB_BITS as usize + 1) * HALF as usize) + HALF as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index_of(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let g = e - SUB_BITS + 1; // >= 1
    let m = v >> g; // in [64, 128)
    (g as u64 * HALF + m) as usize
}

/// Inclusive bounds of the values that land in bucket `i`.
fn bounds_of(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < (1 << SUB_BITS) {
        return (i, i);
    }
    let g = i / HALF - 1;
    let m = i - g * HALF;
    let lo = m << g;
    let hi = lo.saturating_add((1u64 << g) - 1);
    (lo, hi)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: Vec::new(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[index_of(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket that
    /// holds the `ceil(q * count)`-th smallest value, clamped to the recorded
    /// min and max (so it never overstates by more than one bucket width).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank == 1 {
            return Some(self.min);
        }
        if rank >= self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (_, hi) = bounds_of(i);
                return Some(hi.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut prev_hi = None;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds_of(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {i}");
            }
            prev_hi = Some(hi);
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(hi), i);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_small() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            123_456,
            9_999_999,
            1 << 40,
            u64::MAX / 3,
        ] {
            let (lo, hi) = bounds_of(index_of(v));
            assert!(lo <= v && v <= hi);
            assert!(
                (hi - lo) as f64 <= (lo as f64) / 64.0 + 1.0,
                "v={v} lo={lo} hi={hi}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        let p999 = h.quantile(0.999).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert!((p999 / 9_990_000.0 - 1.0).abs() < 0.02, "{p999}");
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        assert_eq!(h.quantile(0.0), Some(1000));
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), Some(10_000_000));
        let mut g = Histogram::new();
        g.record(1);
        g.merge(&h);
        assert_eq!(g.count(), 10_001);
        assert_eq!(g.quantile(0.0), Some(1));
        assert!((g.mean().unwrap() - 5_000_500.0 * 10_000.0 / 10_001.0).abs() < 1.0);
    }
}
