//! How an engine behaves: [`EngineConfig`] and its deliberately unsafe
//! switches, [`UnsafeControls`].

use std::time::Duration;

use chorus_gossip::Config as GossipConfig;
use chorus_storage::hlc::HlcConfig;

use crate::wire::MAX_FRAME_BYTES;

/// How an engine behaves. `Default` is what a production node uses, apart
/// from its name.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A human-readable name for the node, shown in cluster status.
    pub name: String,
    /// The node's failure zone.
    pub zone: String,
    /// The node's capacity relative to others (ring weight).
    pub weight: u32,
    /// Partitions of a new cluster's ring (P).
    pub partitions: u32,
    /// Replicas of every key (N).
    pub replicas: usize,
    /// How many members must be up before the first ring is built.
    pub initial_members: usize,
    /// Membership settings, including the seeds.
    pub gossip: GossipConfig,
    /// Settings of the hybrid logical clock.
    pub hlc: HlcConfig,
    /// Most requests in flight whose client still waits for an answer
    /// (coordinated gets and puts not yet answered, forwarded writes);
    /// client requests beyond it are refused as overloaded. Work that goes
    /// on after the client was answered is bounded by the `max_background_*`
    /// settings instead.
    pub max_pending_requests: usize,
    /// Most background requests: puts already answered whose replication
    /// goes on, gets already answered that wait for their read repair, hint
    /// deliveries. While this or `max_background_bytes` is reached, new
    /// client requests wait in the admission queue (backpressure).
    pub max_background_requests: usize,
    /// Most bytes of objects held by background requests (the encoded
    /// object of each answered put and hint delivery in flight). Read
    /// repairs are skipped while it is reached.
    pub max_background_bytes: usize,
    /// Most client requests waiting for admission; more are refused as
    /// overloaded.
    pub max_queued_requests: usize,
    /// Most bytes of values in client requests waiting for admission.
    pub max_queued_bytes: usize,
    /// How long a get waits for the replicas it asked first (as many as
    /// `r` and `pr` need, this node's own copy first) before it asks the
    /// other targets too: speculative retry, as Cassandra's
    /// `speculative_retry`, here a fixed delay. A failed answer has the
    /// others asked at once.
    pub read_speculation: Duration,
    /// The chance, from 0 to 1, that a get asks every target at once
    /// rather than as many as `r` needs, so that read repair also reaches
    /// replicas a quorum read would not ask (Cassandra's former
    /// `read_repair_chance`). Drawn from the engine's seeded generator.
    pub read_repair_chance: f64,
    /// How often a hint round offers hints to their primaries. A primary
    /// that acknowledged every hint of its batch gets the next batch at
    /// once, without waiting for the next round.
    pub hint_interval: Duration,
    /// Hints in one batch to one primary (a primary has one batch in
    /// flight at a time).
    pub hint_batch: usize,
    /// How often ring agreement and the claimant's duty are checked.
    pub ring_interval: Duration,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// How many shards split the node's partitions between them (partition
    /// `p` belongs to shard `p % shards`); each owns the request state of
    /// its partitions and a share of the budgets above, and the runtime
    /// runs each on a thread of its own ([`Engine::detach_shards`]). At
    /// least 1, at most 256. 1 in `Default` (what `chorus dev`, whose
    /// nodes share one machine, and the simulator use); `chorus node
    /// start` runs one per core unless told
    /// ([`default_shards`](crate::config::default_shards)).
    pub shards: usize,
    /// Turns on the [BUGGIFY](crate::buggify) fault sites. Only the
    /// simulator sets it; production nodes keep the default, off.
    pub buggify: bool,
    /// Deliberately unsafe behaviour, off by default. See [`UnsafeControls`].
    pub unsafe_controls: UnsafeControls,
}

/// Deliberately unsafe behaviour, each switch off by default and never set
/// by `chorus node start`: they exist so the test suite can show that its
/// history checkers catch the faults they guard against (negative controls,
/// as Jepsen runs known-unsafe configurations). Each switch names the
/// promise it breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeControls {
    /// Collapse a key's siblings to the one with the latest HLC timestamp on
    /// every coordinated write (last-writer-wins by wall clock), dropping
    /// concurrent acknowledged values no client was shown.
    pub last_writer_wins: bool,
    /// Answer a write with the key's whole stored context instead of the
    /// writer's own context plus its new version, so the next write with
    /// it replaces siblings its writer never saw (the review's F1).
    pub whole_context_in_write_replies: bool,
    /// Keep the partitions' actors when a new epoch should begin (after an
    /// unclean stop, on a restored or copied data directory), so a node
    /// that lost unsynced writes mints their dots again (the review's F2).
    pub keep_actors_after_unclean_stop: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            name: String::from("chorus"),
            zone: String::new(),
            weight: 100,
            partitions: 256,
            replicas: 3,
            initial_members: 3,
            gossip: GossipConfig::default(),
            hlc: HlcConfig::default(),
            max_pending_requests: 10_000,
            max_background_requests: 1024,
            max_background_bytes: 64 << 20,
            max_queued_requests: 4096,
            max_queued_bytes: 64 << 20,
            read_speculation: Duration::from_millis(50),
            read_repair_chance: 0.1,
            hint_interval: Duration::from_secs(1),
            hint_batch: 64,
            ring_interval: Duration::from_millis(500),
            max_value_bytes: crate::api::DEFAULT_MAX_VALUE_BYTES,
            max_frame_bytes: MAX_FRAME_BYTES,
            unsafe_controls: UnsafeControls::default(),
            shards: 1,
            buggify: false,
        }
    }
}
