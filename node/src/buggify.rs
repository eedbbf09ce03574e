//! BUGGIFY: fault sites inside the engine, switched on only in simulation.
//!
//! The idea is FoundationDB's (`flow/include/flow/Buggify.h`): production
//! code marks the places where a rare but legal event would exercise a
//! path that tests seldom reach, and the simulator turns them on so those
//! paths run all the time. Every site here injects only what can happen in
//! production anyway — a frame lost inside the node, a timer firing early,
//! an opportunistic repair not made, a message sent twice — so a bug it
//! exposes is a real bug, never an artefact of the site.
//!
//! The sites are the same code in every build (not a cargo feature): they
//! are off unless [`EngineConfig::buggify`](crate::engine::EngineConfig)
//! says otherwise, and only the simulator sets it. When on, each site is
//! first *activated or not* for the engine's run (with probability 1/2,
//! on its first evaluation, as FoundationDB does), and an active site then
//! fires with its own small probability ([`Site::probability`]). Both
//! draws come from a generator of their own, seeded from the engine's seed
//! without drawing from the engine's generator, so an engine with the
//! sites off makes exactly the choices it made before they existed and a
//! seed replays the same run with them on.
//!
//! # The sites
//!
//! | site | where | what it does | why legal |
//! |---|---|---|---|
//! | [`Site::ReplicaReplyDropped`] | replica answering a `Store` or `Read` | the write is applied (or the read made) but the acknowledgement or answer is not sent | the reply frame was lost on the way |
//! | [`Site::TimeoutEarly`] | every request deadline | the deadline is a random fraction of the asked time | a request timer fires whenever it fires; coordinators must treat a timeout as "maybe applied" |
//! | [`Site::ReadRepairSkipped`] | a finished get with stale replicas | no repair is sent | read repair is opportunistic (skipped under load too) |
//! | [`Site::HintRoundSkipped`] | the hint timer | the round is not run; the next interval offers the hints | the node was busy or descheduled |
//! | [`Site::HintSentTwice`] | hint delivery | the hint's `Store` frame goes out twice under one request id | a retransmission; replicas merge idempotently, the second acknowledgement answers nothing |
//! | [`Site::GossipFrameDropped`] | gossip frames the node sends | the frame is not sent | gossip runs over a lossy network |
//! | [`Site::RingPushDropped`] | answering a ring fetch | the ring is not sent; the fetcher retries after its timeout | the reply frame was lost |

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fault site. See the [module docs](self) for what each one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    ReplicaReplyDropped,
    TimeoutEarly,
    ReadRepairSkipped,
    HintRoundSkipped,
    HintSentTwice,
    GossipFrameDropped,
    RingPushDropped,
}

impl Site {
    /// Every site, in a fixed order.
    pub const ALL: [Site; 7] = [
        Site::ReplicaReplyDropped,
        Site::TimeoutEarly,
        Site::ReadRepairSkipped,
        Site::HintRoundSkipped,
        Site::HintSentTwice,
        Site::GossipFrameDropped,
        Site::RingPushDropped,
    ];

    /// The site's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Site::ReplicaReplyDropped => "replica-reply-dropped",
            Site::TimeoutEarly => "timeout-early",
            Site::ReadRepairSkipped => "read-repair-skipped",
            Site::HintRoundSkipped => "hint-round-skipped",
            Site::HintSentTwice => "hint-sent-twice",
            Site::GossipFrameDropped => "gossip-frame-dropped",
            Site::RingPushDropped => "ring-push-dropped",
        }
    }

    /// How often an active site fires when evaluated, 0.0..1.0.
    pub fn probability(self) -> f64 {
        match self {
            Site::ReplicaReplyDropped => 0.05,
            Site::TimeoutEarly => 0.05,
            Site::ReadRepairSkipped => 0.25,
            Site::HintRoundSkipped => 0.25,
            Site::HintSentTwice => 0.1,
            Site::GossipFrameDropped => 0.05,
            Site::RingPushDropped => 0.25,
        }
    }

    fn index(self) -> usize {
        Site::ALL
            .iter()
            .position(|&s| s == self)
            .expect("every site is in ALL")
    }
}

/// The fault sites of one engine: whether they are on, which are active,
/// and how often each fired.
#[derive(Debug, Clone)]
pub struct Buggify {
    enabled: bool,
    rng: ChaCha8Rng,
    /// Per site: `None` until first evaluated while on, then whether it
    /// is active for this run.
    active: [Option<bool>; Site::ALL.len()],
    fired: [u64; Site::ALL.len()],
}

impl Buggify {
    /// Sites for an engine started with `seed`, on or off. Draws nothing
    /// from any other generator.
    pub fn new(seed: u64, enabled: bool) -> Buggify {
        // A fixed odd constant keeps this stream apart from the engine's.
        let rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0B06_61F7_5EED_0DD5);
        Buggify {
            enabled,
            rng,
            active: [None; Site::ALL.len()],
            fired: [0; Site::ALL.len()],
        }
    }

    /// Turns the sites on or off.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// Whether the sites are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `site` fires now. Always false, drawing nothing, while off.
    pub fn fires(&mut self, site: Site) -> bool {
        if !self.enabled {
            return false;
        }
        let i = site.index();
        let active = *self.active[i].get_or_insert_with(|| self.rng.random_bool(0.5));
        let fires = active && self.rng.random_bool(site.probability());
        if fires {
            self.fired[i] += 1;
        }
        fires
    }

    /// A fraction in `0.0..1.0` drawn from the sites' generator (for a
    /// site that shortens or stretches something).
    pub fn fraction(&mut self) -> f64 {
        self.rng.random()
    }

    /// How often `site` fired.
    pub fn fired(&self, site: Site) -> u64 {
        self.fired[site.index()]
    }

    /// How often any site fired.
    pub fn fired_total(&self) -> u64 {
        self.fired.iter().sum()
    }

    /// How many sites were evaluated while on and drawn active for this
    /// run. A run can draw every site it reaches inactive; then none fires.
    pub fn active_total(&self) -> usize {
        self.active.iter().filter(|a| **a == Some(true)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_that_are_off_never_fire_and_draw_nothing() {
        let mut off = Buggify::new(7, false);
        for _ in 0..1000 {
            for site in Site::ALL {
                assert!(!off.fires(site));
            }
        }
        assert_eq!(off.fired_total(), 0);
        assert_eq!(off.active_total(), 0, "no site is drawn while off");
        // Nothing was drawn: turned on, it fires exactly as a fresh one.
        off.set_enabled(true);
        let mut fresh = Buggify::new(7, true);
        for _ in 0..1000 {
            for site in Site::ALL {
                assert_eq!(off.fires(site), fresh.fires(site));
            }
        }
    }

    #[test]
    fn sites_that_are_on_fire_sometimes_and_replay_by_seed() {
        let run = |seed| {
            let mut sites = Buggify::new(seed, true);
            let fired: Vec<bool> = (0..2000)
                .flat_map(|_| Site::ALL.map(|s| sites.fires(s)))
                .collect();
            (fired, sites.fired_total())
        };
        let (a, total) = run(3);
        assert_eq!(run(3).0, a);
        let mut evaluated = Buggify::new(3, true);
        for site in Site::ALL {
            evaluated.fires(site);
        }
        let active = evaluated.active_total();
        assert!(
            (1..Site::ALL.len()).contains(&active),
            "about half the sites are active: {active}"
        );
        assert!(total > 0, "some active site fired");
        assert!(
            total < 2000 * Site::ALL.len() as u64 / 4,
            "sites fire rarely"
        );
        // Over many seeds, every site is active in some run.
        for site in Site::ALL {
            assert!(
                (0..32).any(|seed| {
                    let mut sites = Buggify::new(seed, true);
                    (0..200).any(|_| sites.fires(site))
                }),
                "{} never fired",
                site.name()
            );
        }
    }
}
