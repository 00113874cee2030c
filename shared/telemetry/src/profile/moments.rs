//! Exact, mergeable summary statistics: count, min, max, mean and the sum of squared deviations
//! (`m2`), updated with Welford's algorithm and merged with Chan et al.'s parallel formula.
//!
//! `count`, `min` and `max` merge exactly; `mean` and `m2` merge exactly up to floating-point
//! rounding (a merged result agrees with a sequential one to about 1e-12 relative).

/// Count, min, max, mean and variance of a stream of finite values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    count: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Rebuilds moments from their parts (as sent over the wire).
    pub fn from_parts(count: u64, min: f64, max: f64, mean: f64, m2: f64) -> Self {
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            min,
            max,
            mean,
            m2,
        }
    }

    /// Folds in one finite value (the caller filters NaN and infinities).
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        if self.count == 1 {
            self.min = x;
            self.max = x;
            self.mean = x;
            self.m2 = 0.0;
            return;
        }
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Folds in another summary (Chan, Golub, LeVeque 1979).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * (n_b / n);
        self.m2 += other.m2 + delta * delta * (n_a * n_b / n);
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Arithmetic mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Sum of squared deviations from the mean (0 when empty).
    pub fn m2(&self) -> f64 {
        self.m2
    }

    /// Population variance (`m2 / count`), `None` when empty.
    pub fn variance(&self) -> Option<f64> {
        (self.count > 0).then(|| self.m2 / self.count as f64)
    }

    /// Population standard deviation, `None` when empty.
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_two_pass_statistics() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let mut m = Moments::default();
        xs.iter().for_each(|x| m.add(*x));
        assert_eq!(m.count(), 8);
        assert_eq!(m.mean(), Some(5.0));
        assert_eq!(m.variance(), Some(4.0));
        assert_eq!((m.min(), m.max()), (Some(2.0), Some(9.0)));
    }

    #[test]
    fn merge_with_empty_is_identity() {
        let mut a = Moments::default();
        a.add(1.0);
        let before = a;
        a.merge(&Moments::default());
        assert_eq!(a, before);
        let mut e = Moments::default();
        e.merge(&a);
        assert_eq!(e, a);
    }
}
