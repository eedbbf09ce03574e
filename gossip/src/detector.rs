//! Phi-accrual failure detection over heartbeat inter-arrival times.
//!
//! For each peer the detector keeps a bounded window of the intervals between
//! the moments this node learned a newer heartbeat of it (directly or through
//! gossip). Given the time since the last such moment, phi is
//! `-log10(P(an interval this long or longer))` under a normal distribution
//! fitted to the window, with the mean stretched by an acceptable pause and
//! the standard deviation floored by a minimum (Hayashibara et al.; the
//! logistic approximation of the normal tail used by Akka). A peer whose phi
//! exceeds the threshold is suspected.
//!
//! phi grows monotonically with the elapsed time, so "phi > threshold" is the
//! same as "elapsed > mean + pause + y·std" for one `y` that depends only on
//! the threshold. That `y` is solved once, which makes the check on every tick
//! a handful of arithmetic operations per peer.

use std::collections::VecDeque;
use std::time::Duration;

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiSettings {
    /// Suspicion level above which a peer is considered down.
    pub threshold: f64,
    /// Most intervals remembered per peer.
    pub window: usize,
    /// Floor of the standard deviation, so a very regular peer is not
    /// convicted by one slightly late heartbeat.
    pub min_std_dev: Duration,
    /// Added to the mean: a silence this long beyond the usual is tolerated
    /// (a GC pause, a slow disk, a congested link).
    pub acceptable_pause: Duration,
    /// Expected interval before any has been observed (the gossip interval).
    pub first_estimate: Duration,
}

/// phi of a silence `y` standard deviations past the mean.
fn phi_of_y(y: f64) -> f64 {
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if y > 0.0 {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// The `y` at which phi reaches `threshold` (bisection; phi is increasing in y).
pub(crate) fn y_for_threshold(threshold: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if phi_of_y(mid) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Heartbeat arrival history of one peer.
#[derive(Debug, Clone)]
pub(crate) struct ArrivalWindow {
    last: Duration,
    intervals_ms: VecDeque<u32>,
    sum: u64,
    sum_sq: u128,
}

impl ArrivalWindow {
    /// A window whose last arrival is `now`, seeded with two intervals,
    /// `estimate` and `3 · estimate` (mean twice the estimate, deviation the
    /// estimate): heartbeats relayed by gossip arrive less regularly than the
    /// gossip interval, and a young window must not convict on its first gap.
    pub(crate) fn new(now: Duration, settings: &PhiSettings) -> Self {
        let estimate = settings.first_estimate.as_millis() as u64;
        let mut window = ArrivalWindow {
            last: now,
            intervals_ms: VecDeque::new(),
            sum: 0,
            sum_sq: 0,
        };
        window.push(estimate, settings.window);
        window.push(estimate * 3, settings.window);
        window
    }

    fn push(&mut self, interval_ms: u64, cap: usize) {
        let interval_ms = u32::try_from(interval_ms).unwrap_or(u32::MAX);
        self.intervals_ms.push_back(interval_ms);
        let interval_ms = u64::from(interval_ms);
        self.sum += interval_ms;
        self.sum_sq += u128::from(interval_ms) * u128::from(interval_ms);
        while self.intervals_ms.len() > cap.max(1) {
            if let Some(old) = self.intervals_ms.pop_front() {
                let old = u64::from(old);
                self.sum -= old;
                self.sum_sq -= u128::from(old) * u128::from(old);
            }
        }
    }

    /// A newer heartbeat was learned at `now`.
    pub(crate) fn record(&mut self, now: Duration, settings: &PhiSettings) {
        let interval = now.saturating_sub(self.last).as_millis() as u64;
        self.push(interval, settings.window);
        self.last = now;
    }

    /// Restarts the clock at `now` without recording the interval (the peer
    /// came back after being down, or this node itself was paused).
    pub(crate) fn restart_at(&mut self, now: Duration) {
        self.last = self.last.max(now);
    }

    /// Moves the last arrival forward by `gap` (never past `now`): time during
    /// which this node was not listening does not count against the peer.
    pub(crate) fn forgive(&mut self, gap: Duration, now: Duration) {
        self.last = (self.last + gap).min(now).max(self.last);
    }

    fn mean_std_ms(&self, settings: &PhiSettings) -> (f64, f64) {
        let n = self.intervals_ms.len().max(1) as f64;
        let mean = self.sum as f64 / n;
        let variance = (self.sum_sq as f64 / n - mean * mean).max(0.0);
        let std = variance
            .sqrt()
            .max(settings.min_std_dev.as_secs_f64() * 1000.0);
        (mean + settings.acceptable_pause.as_secs_f64() * 1000.0, std)
    }

    /// Suspicion level at `now`.
    pub(crate) fn phi(&self, now: Duration, settings: &PhiSettings) -> f64 {
        let elapsed = now.saturating_sub(self.last).as_secs_f64() * 1000.0;
        let (mean, std) = self.mean_std_ms(settings);
        phi_of_y((elapsed - mean) / std)
    }

    /// Whether phi exceeds the threshold whose `y` is `y_threshold`.
    pub(crate) fn suspects(&self, now: Duration, settings: &PhiSettings, y_threshold: f64) -> bool {
        let elapsed = now.saturating_sub(self.last).as_secs_f64() * 1000.0;
        let (mean, std) = self.mean_std_ms(settings);
        elapsed > mean + y_threshold * std
    }

    /// Silence after which the peer will be suspected, if nothing arrives.
    #[cfg(test)]
    pub(crate) fn suspect_after(&self, settings: &PhiSettings, y_threshold: f64) -> Duration {
        let (mean, std) = self.mean_std_ms(settings);
        Duration::from_secs_f64(((mean + y_threshold * std) / 1000.0).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PhiSettings {
        PhiSettings {
            threshold: 8.0,
            window: 100,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::ZERO,
            first_estimate: Duration::from_secs(1),
        }
    }

    #[test]
    fn phi_grows_with_silence_and_crosses_the_threshold_where_predicted() {
        let s = settings();
        let y = y_for_threshold(s.threshold);
        assert!((phi_of_y(y) - 8.0).abs() < 1e-6);
        let mut w = ArrivalWindow::new(Duration::ZERO, &s);
        for i in 1..=50 {
            w.record(Duration::from_secs(i), &s);
        }
        let last = Duration::from_secs(50);
        let early = w.phi(last + Duration::from_millis(500), &s);
        let late = w.phi(last + Duration::from_secs(3), &s);
        assert!(early < 1.0, "{early}");
        assert!(late > 8.0, "{late}");
        let after = w.suspect_after(&s, y);
        assert!(!w.suspects(last + after - Duration::from_millis(5), &s, y));
        assert!(w.suspects(last + after + Duration::from_millis(5), &s, y));
        let phi_at = w.phi(last + after, &s);
        assert!((phi_at - 8.0).abs() < 0.01, "{phi_at}");
    }

    #[test]
    fn the_acceptable_pause_delays_suspicion_by_its_length() {
        let mut s = settings();
        let y = y_for_threshold(s.threshold);
        let w = ArrivalWindow::new(Duration::ZERO, &s);
        let base = w.suspect_after(&s, y);
        s.acceptable_pause = Duration::from_secs(3);
        let paused = w.suspect_after(&s, y);
        assert_eq!((paused - base).as_millis(), 3000);
    }

    #[test]
    fn the_window_is_bounded_and_forgets_old_intervals() {
        let s = PhiSettings {
            window: 10,
            ..settings()
        };
        let mut w = ArrivalWindow::new(Duration::ZERO, &s);
        let mut t = Duration::ZERO;
        for _ in 0..5 {
            t += Duration::from_secs(10);
            w.record(t, &s);
        }
        for _ in 0..10 {
            t += Duration::from_secs(1);
            w.record(t, &s);
        }
        assert_eq!(w.intervals_ms.len(), 10);
        let (mean, _) = w.mean_std_ms(&s);
        assert!((mean - 1000.0).abs() < 1e-9, "{mean}");
    }
}
