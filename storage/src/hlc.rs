//! Hybrid logical clock.
//!
//! A [`Timestamp`] is wall-clock milliseconds plus a logical counter, packed in
//! one `u64` (48 bits of milliseconds, 16 of counter) so timestamps compare as
//! integers. The [`Hlc`] hands out strictly increasing timestamps that stay
//! close to the wall clock: it follows the wall clock when it moves forward,
//! counts logically when it stands still or steps back, and advances past
//! every timestamp it receives from a peer. A peer timestamp further ahead of
//! the local wall clock than the configured maximum drift is refused, so one
//! node with a broken clock cannot drag the cluster's time into the future.
//!
//! The HLC orders nothing causally — dots and version vectors do that. It is
//! for last-writer-wins buckets, expiry, tombstone age, showing users when a
//! version was written, and as the source of dot counters.
//!
//! The clock takes the wall time as an argument and never reads a clock
//! itself; the runtime does.
//!
//! # Staying monotonic across restarts
//!
//! Persisting every timestamp would cost an fsync per write. Instead the clock
//! works under a *lease*: before it issues a timestamp at or above its
//! `ceiling`, it raises the ceiling by the lease length and reports the new
//! ceiling through [`Hlc::ceiling_to_persist`]. The caller stores that value
//! durably, confirms it with [`Hlc::ceiling_persisted`], and only then lets
//! any newly issued timestamp leave the node. Until the confirmation the
//! ceiling stays pending and is reported again, so a failed persist is
//! retried rather than forgotten. After a restart, [`Hlc::resume`] starts
//! above the persisted ceiling, so no timestamp is ever issued twice,
//! whatever the wall clock did while the node was down.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, Month, UtcDateTime};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical clock reading: wall milliseconds and a logical counter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The largest wall-clock value a timestamp can hold (year 10889).
    pub const MAX_WALL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn new(wall_ms: u64, logical: u16) -> Self {
        assert!(
            wall_ms <= Self::MAX_WALL_MS,
            "wall clock beyond the year 10889"
        );
        Timestamp((wall_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// The compact form: one integer that orders like the timestamp.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(raw: u64) -> Self {
        Timestamp(raw)
    }

    /// Milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The timestamp that follows this one, rolling into the next millisecond
    /// when the logical counter is exhausted.
    fn successor(self) -> Timestamp {
        match self.logical().checked_add(1) {
            Some(logical) => Timestamp::new(self.wall_ms(), logical),
            None => Timestamp::new(self.wall_ms() + 1, 0),
        }
    }
}

/// Human-readable form: RFC 3339 UTC with milliseconds, then `+` and the
/// logical counter, e.g. `2026-11-22T02:30:00.123Z+0`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = UtcDateTime::from_unix_timestamp_nanos(i128::from(self.wall_ms()) * 1_000_000)
            .expect("every wall-clock value of a timestamp is a date");
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z+{}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond(),
            self.logical()
        )
    }
}

/// The error for a string that is not a timestamp in the [`Display`](fmt::Display) form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a timestamp (expected e.g. 2026-11-22T02:30:00.123Z+0): {0:?}")]
pub struct ParseTimestampError(String);

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTimestampError(s.chars().take(64).collect());
        // The year has four digits, or five past 9999; the rest is fixed width.
        let y = s.find('-').filter(|&y| y == 4 || y == 5).ok_or_else(bad)?;
        let b = s.as_bytes();
        if b.len() < y + 22 || b[y + 3] != b'-' || b[y + 6] != b'T' || b[y + 9] != b':' {
            return Err(bad());
        }
        if b[y + 12] != b':' || b[y + 15] != b'.' || b[y + 19] != b'Z' || b[y + 20] != b'+' {
            return Err(bad());
        }
        let num = |range: std::ops::Range<usize>| -> Result<u64, ParseTimestampError> {
            let part = &s[range];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        let (year, month, day) = (num(0..y)?, num(y + 1..y + 3)?, num(y + 4..y + 6)?);
        let (hour, minute, second, milli) = (
            num(y + 7..y + 9)?,
            num(y + 10..y + 12)?,
            num(y + 13..y + 15)?,
            num(y + 16..y + 19)?,
        );
        let logical: u16 = s[y + 21..].parse().map_err(|_| bad())?;
        // At most five digits of year, two of month and so on: the casts
        // are exact, and the date and time are checked by `time`.
        let month = Month::try_from(month as u8).map_err(|_| bad())?;
        let date = Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| bad())?;
        let at = date
            .with_hms_milli(hour as u8, minute as u8, second as u8, milli as u16)
            .map_err(|_| bad())?
            .as_utc();
        let wall_ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?;
        if wall_ms > Timestamp::MAX_WALL_MS {
            return Err(bad());
        }
        Ok(Timestamp::new(wall_ms, logical))
    }
}

/// Settings of a [`Hlc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlcConfig {
    /// How far ahead of the local wall clock a peer's timestamp may be.
    pub max_drift: Duration,
    /// How far ahead of issued timestamps the persisted ceiling is kept. Must
    /// be below `max_drift`, so that timestamps issued after a restart (which
    /// start at the old ceiling) are still accepted by peers.
    pub lease: Duration,
}

impl Default for HlcConfig {
    fn default() -> Self {
        HlcConfig {
            max_drift: Duration::from_secs(5),
            lease: Duration::from_secs(1),
        }
    }
}

/// The clock refused a peer's timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The clock is unchanged.
    #[error("remote timestamp {remote} is {ahead_ms} ms ahead of the local wall clock; the maximum drift is {max_drift_ms} ms")]
    DriftExceeded {
        remote: Timestamp,
        ahead_ms: u64,
        max_drift_ms: u64,
    },
}

/// A hybrid logical clock. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Hlc {
    config: HlcConfig,
    last: Timestamp,
    /// No timestamp at or above this has been issued; it is persisted, or
    /// about to be through `pending`.
    ceiling: Timestamp,
    pending: Option<Timestamp>,
}

impl Hlc {
    /// A clock for a node with no persisted ceiling.
    pub fn new(config: HlcConfig) -> Self {
        Self::resume(config, Timestamp::ZERO)
    }

    /// A clock for a node that persisted `ceiling` in an earlier run.
    pub fn resume(config: HlcConfig, ceiling: Timestamp) -> Self {
        assert!(
            config.lease < config.max_drift,
            "the HLC lease must be shorter than the maximum drift"
        );
        Hlc {
            config,
            last: ceiling,
            ceiling,
            pending: None,
        }
    }

    pub fn config(&self) -> HlcConfig {
        self.config
    }

    /// The last timestamp issued (or the resumed ceiling).
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A new timestamp for a local event, greater than every earlier one.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall = Timestamp::new(wall_ms.min(Timestamp::MAX_WALL_MS), 0);
        let next = if wall > self.last {
            wall
        } else {
            self.last.successor()
        };
        self.issue(next, wall_ms)
    }

    /// Advances past a peer's timestamp and returns a new local timestamp
    /// greater than both, or refuses a timestamp too far in the future and
    /// leaves the clock unchanged.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp, HlcError> {
        let max_drift_ms = self.config.max_drift.as_millis() as u64;
        if remote.wall_ms() > wall_ms.saturating_add(max_drift_ms) {
            return Err(HlcError::DriftExceeded {
                remote,
                ahead_ms: remote.wall_ms() - wall_ms,
                max_drift_ms,
            });
        }
        let wall = Timestamp::new(wall_ms.min(Timestamp::MAX_WALL_MS), 0);
        let floor = self.last.max(remote);
        let next = if wall > floor {
            wall
        } else {
            floor.successor()
        };
        Ok(self.issue(next, wall_ms))
    }

    /// The new ceiling the caller must persist (durably) before any timestamp
    /// issued since the last confirmed persist leaves this node; `None` when
    /// the persisted ceiling still covers them.
    ///
    /// The ceiling stays pending — this returns it again — until the caller
    /// confirms with [`Hlc::ceiling_persisted`] that it is durable. A caller
    /// whose persist failed must not use the timestamps it was guarding.
    pub fn ceiling_to_persist(&self) -> Option<Timestamp> {
        self.pending
    }

    /// Confirms that `ceiling` (a value returned by
    /// [`Hlc::ceiling_to_persist`], or a higher one) is durably persisted.
    /// A pending ceiling above it stays pending.
    pub fn ceiling_persisted(&mut self, ceiling: Timestamp) {
        if self.pending.is_some_and(|pending| pending <= ceiling) {
            self.pending = None;
        }
    }

    /// Issues `next`, raising the ceiling when `next` reaches it. The new
    /// ceiling is a lease ahead of the *wall clock* (and above `next`), not
    /// of `next`: after a restart `next` starts at the old ceiling, up to a
    /// lease ahead of the wall clock, and a ceiling taken from it would
    /// push each quick restart another lease ahead, until peers refused the
    /// node's timestamps as beyond their drift bound.
    fn issue(&mut self, next: Timestamp, wall_ms: u64) -> Timestamp {
        debug_assert!(next > self.last);
        self.last = next;
        if next >= self.ceiling {
            let lease_ms = self.config.lease.as_millis() as u64;
            let wall = wall_ms.saturating_add(lease_ms).min(Timestamp::MAX_WALL_MS);
            self.ceiling = Timestamp::new(wall, 0).max(next.successor());
            self.pending = Some(self.ceiling);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_795_000_000_000; // November 2026

    fn config() -> HlcConfig {
        HlcConfig {
            max_drift: Duration::from_millis(500),
            lease: Duration::from_millis(100),
        }
    }

    #[test]
    fn follows_the_wall_clock_and_counts_when_it_stalls() {
        let mut hlc = Hlc::new(config());
        assert_eq!(hlc.now(T0), Timestamp::new(T0, 0));
        assert_eq!(hlc.now(T0), Timestamp::new(T0, 1));
        assert_eq!(
            hlc.now(T0 - 1000),
            Timestamp::new(T0, 2),
            "wall clock stepped back"
        );
        assert_eq!(hlc.now(T0 + 5), Timestamp::new(T0 + 5, 0));
    }

    #[test]
    fn observe_advances_past_the_remote() {
        let mut hlc = Hlc::new(config());
        hlc.now(T0);
        let remote = Timestamp::new(T0 + 200, 7);
        assert_eq!(
            hlc.observe(remote, T0).unwrap(),
            Timestamp::new(T0 + 200, 8)
        );
        assert!(hlc.now(T0) > remote);
    }

    #[test]
    fn observe_refuses_excessive_drift_and_changes_nothing() {
        let mut hlc = Hlc::new(config());
        let before = hlc.now(T0);
        let err = hlc.observe(Timestamp::new(T0 + 501, 0), T0).unwrap_err();
        assert_eq!(
            err,
            HlcError::DriftExceeded {
                remote: Timestamp::new(T0 + 501, 0),
                ahead_ms: 501,
                max_drift_ms: 500
            }
        );
        assert_eq!(hlc.last(), before);
        assert!(hlc.observe(Timestamp::new(T0 + 500, 0), T0).is_ok());
    }

    #[test]
    fn logical_overflow_rolls_into_the_next_millisecond() {
        let mut hlc = Hlc::resume(config(), Timestamp::new(T0, u16::MAX - 1));
        assert_eq!(hlc.now(T0), Timestamp::new(T0, u16::MAX));
        assert_eq!(hlc.now(T0), Timestamp::new(T0 + 1, 0));
    }

    /// Restarts in quick succession (a crash loop) keep the clock within
    /// about one lease of the wall clock: each restart resumes at the
    /// persisted ceiling, but the next ceiling is taken from the wall clock,
    /// so peers never see the node's timestamps run ahead of their drift
    /// bound.
    #[test]
    fn a_crash_loop_does_not_push_the_clock_ahead() {
        let config = config();
        let lease_ms = config.lease.as_millis() as u64;
        let mut hlc = Hlc::new(config);
        let mut wall = T0;
        for _ in 0..50 {
            let issued = hlc.now(wall);
            assert!(
                issued.wall_ms() <= wall + lease_ms + 1,
                "{issued} at {wall}"
            );
            let ceiling = hlc.ceiling_to_persist().unwrap_or(hlc.ceiling);
            hlc.ceiling_persisted(ceiling);
            // Killed and restarted 10 ms later.
            wall += 10;
            hlc = Hlc::resume(config, ceiling);
        }
    }

    #[test]
    fn resumed_clock_starts_above_the_persisted_ceiling() {
        let mut hlc = Hlc::new(config());
        let first = hlc.now(T0);
        let ceiling = hlc
            .ceiling_to_persist()
            .expect("the first timestamp needs a lease");
        assert!(ceiling > first);
        hlc.ceiling_persisted(ceiling);
        assert_eq!(hlc.now(T0 + 1), Timestamp::new(T0 + 1, 0));
        assert_eq!(hlc.ceiling_to_persist(), None, "still within the lease");
        // The node restarts with its wall clock set back by ten seconds.
        let mut restarted = Hlc::resume(config(), ceiling);
        let after = restarted.now(T0 - 10_000);
        assert!(after > ceiling && after > first);
    }

    #[test]
    fn a_ceiling_stays_pending_until_its_persist_is_confirmed() {
        let mut hlc = Hlc::new(config());
        let first = hlc.now(T0);
        let ceiling = hlc.ceiling_to_persist().expect("a new lease");
        assert!(ceiling > first);
        // The persist failed: nothing is confirmed, and the next timestamp
        // (still below the in-memory ceiling) keeps the ceiling pending.
        let second = hlc.now(T0 + 1);
        assert!(second < ceiling);
        assert_eq!(hlc.ceiling_to_persist(), Some(ceiling), "reported again");
        // Confirming an older value does not clear a newer pending ceiling.
        hlc.ceiling_persisted(Timestamp::new(T0, 0));
        assert_eq!(hlc.ceiling_to_persist(), Some(ceiling));
        hlc.ceiling_persisted(ceiling);
        assert_eq!(hlc.ceiling_to_persist(), None);
        // A later lease is reported once more timestamps pass the ceiling.
        let past = hlc.now(ceiling.wall_ms() + 1);
        let next = hlc.ceiling_to_persist().expect("a new lease");
        assert!(next > past && next > ceiling);
    }

    #[test]
    fn display_and_parse_round_trip() {
        let ts = Timestamp::new(1_795_314_600_123, 5);
        assert_eq!(ts.to_string(), "2026-11-22T02:30:00.123Z+5");
        assert_eq!(
            "2026-11-22T02:30:00.123Z+5".parse::<Timestamp>().unwrap(),
            ts
        );
        assert_eq!(Timestamp::ZERO.to_string(), "1970-01-01T00:00:00.000Z+0");
        let last = Timestamp::new(Timestamp::MAX_WALL_MS, u16::MAX);
        assert_eq!(last.to_string(), "10889-08-02T05:31:50.655Z+65535");
        assert_eq!("10889-08-02T05:31:50.655Z+65535".parse(), Ok(last));
        assert_eq!(
            "2024-02-29T23:59:59.999Z+0".parse::<Timestamp>().unwrap(),
            Timestamp::new(1_709_251_199_999, 0)
        );
        for bad in [
            "",
            "2026-11-21",
            "2026-13-01T00:00:00.000Z+0",
            "2026-02-30T00:00:00.000Z+0",
            "2026-11-22T02:30:00.123Z+x",
            "2026-11-22T02:30:00.123Z+70000",
            "2026-11-22T02:30:00.123Z+",
            "-2026-11-22T02:30:00.123Z+0",
            "2026-11-22T24:00:00.000Z+0",
            "2026-11-22T02:60:00.000Z+0",
            "2026-11-22T02:30:60.000Z+0",
            "2025-02-29T00:00:00.000Z+0",
            "1969-12-31T23:59:59.999Z+0",
            "10889-08-02T05:31:50.656Z+0",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[derive(Debug, Clone)]
    enum Event {
        Local {
            wall: u64,
        },
        Remote {
            wall: u64,
            remote_wall: u64,
            remote_logical: u16,
        },
        Restart,
    }

    fn event() -> impl Strategy<Value = Event> {
        // Walls wander around T0 with steps back and big jumps.
        let wall = prop_oneof![T0 - 2_000..T0 + 2_000, T0 - 100_000..T0 + 100_000];
        prop_oneof![
            4 => wall.clone().prop_map(|wall| Event::Local { wall }),
            4 => (wall.clone(), wall, any::<u16>()).prop_map(|(wall, remote_wall, remote_logical)| Event::Remote { wall, remote_wall, remote_logical }),
            1 => Just(Event::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn monotonic_under_any_wall_clock_and_restarts(events in proptest::collection::vec(event(), 1..60)) {
            let mut hlc = Hlc::new(config());
            let mut persisted = Timestamp::ZERO;
            let mut last_issued = Timestamp::ZERO;
            let mut clock_last = Timestamp::ZERO;
            let max_drift_ms = 500;
            for event in events {
                match event {
                    Event::Local { wall } => {
                        let ts = hlc.now(wall);
                        prop_assert!(ts > last_issued);
                        prop_assert!(ts.wall_ms() >= wall, "the clock never runs behind the wall clock");
                        last_issued = ts;
                        clock_last = ts;
                    }
                    Event::Remote { wall, remote_wall, remote_logical } => {
                        let remote = Timestamp::new(remote_wall, remote_logical);
                        match hlc.observe(remote, wall) {
                            Ok(ts) => {
                                prop_assert!(remote_wall <= wall + max_drift_ms);
                                prop_assert!(ts > last_issued && ts > remote);
                                last_issued = ts;
                                clock_last = ts;
                            }
                            Err(HlcError::DriftExceeded { .. }) => {
                                prop_assert!(remote_wall > wall + max_drift_ms);
                                prop_assert_eq!(hlc.last(), clock_last);
                            }
                        }
                    }
                    Event::Restart => {
                        hlc = Hlc::resume(config(), persisted);
                        clock_last = persisted;
                    }
                }
                if let Some(ceiling) = hlc.ceiling_to_persist() {
                    prop_assert!(ceiling > persisted);
                    persisted = ceiling;
                    hlc.ceiling_persisted(ceiling);
                }
                // Every issued timestamp is below the persisted ceiling, so a
                // crash at any point cannot lead to a repeat.
                prop_assert!(last_issued == Timestamp::ZERO || last_issued < persisted);
            }
        }

        #[test]
        fn compact_form_orders_like_the_timestamp(a in 0..Timestamp::MAX_WALL_MS, la: u16, b in 0..Timestamp::MAX_WALL_MS, lb: u16) {
            let (x, y) = (Timestamp::new(a, la), Timestamp::new(b, lb));
            prop_assert_eq!(x.cmp(&y), (a, la).cmp(&(b, lb)));
            prop_assert_eq!(Timestamp::from_u64(x.as_u64()), x);
            prop_assert_eq!(x.to_string().parse::<Timestamp>().unwrap(), x);
        }
    }
}
