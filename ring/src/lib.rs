//! Placement of keys on nodes for Chorus.
//!
//! A key `(bucket, key)` hashes to 64 bits ([`key_hash`]); the hash space is
//! split into P equal ranges, the [partitions](Partitions), P a power of two
//! fixed when the cluster is created; a key's partition is the top `log2(P)`
//! bits of its hash. A [`Ring`] assigns each partition to an ordered list of
//! N distinct member nodes, its *primaries*, and gives each partition a fixed
//! order of *fallbacks*. [`Ring::initial`] builds the first ring from a member
//! set; [`Ring::next`] applies joins, leaves and weight or zone changes;
//! [`TransferPlan::between`] lists the replicas that move from one ring to the
//! next.
//!
//! # What a ring guarantees
//!
//! * **Distinct primaries.** Every partition has exactly N primaries on N
//!   distinct nodes. A ring with fewer than N members cannot be built.
//! * **Zone diversity.** With at least N zones, a partition's primaries are in
//!   N distinct zones. With fewer zones, no zone holds more than
//!   `ceil(N / zones)` replicas of a partition (raised only when small zones
//!   make that impossible), see [`Ring::zone_limit`]. Zone diversity comes
//!   before weight: a zone cannot hold more than its limit of every
//!   partition, however large its nodes.
//! * **Balance.** Each member's target is its share of the `P × N`
//!   replicas in proportion to its weight, capped at P (one replica per
//!   partition) and by the zone rule; what a capped node or zone cannot hold
//!   is shared among the others by weight. Every member holds the floor or
//!   the ceiling of its target. With equal weights every member holds
//!   `floor(P·N/n)` or `ceil(P·N/n)` replicas.
//! * **Little movement.** [`Ring::next`] keeps every replica it can: a
//!   replica moves only off a node that left, off a node above its new
//!   target, to a node below it, or to restore the zone rule. When one node
//!   joins a ring of equal weights in one zone, exactly the newcomer's share
//!   moves; when one leaves, the leaver's replicas move, plus, rarely, a few
//!   more when some remaining node cannot take its new share from the
//!   leaver's partitions because it already holds them. Against an exact
//!   min-cost flow, the claim moved the optimal number of replicas in 98% of
//!   40 000 random small cases (mixed weights, zones and changes) and never
//!   more than 2 above it.
//! * **Determinism.** The ring is a function of its inputs: the same members
//!   in any order, the same previous ring and the same changes in any order
//!   give the same ring, bit for bit, on every platform. The placement uses
//!   integer arithmetic only and breaks ties by node id and by fixed hashes.
//! * **Versions and hashes.** A ring carries a version (1 at creation, one
//!   more for each change) and a 64-bit [hash](Ring::hash) of its canonical
//!   byte encoding ([`Ring::canonical_bytes`]), so nodes can see cheaply
//!   whether they hold the same ring. A ring decoded with serde is checked
//!   (member rules, distinct primaries, zone rule) before it is accepted.
//! * **Cheap lookups.** [`Ring::preference_list_for_key`] hashes the key,
//!   shifts, and returns a slice of a table built with the ring: no
//!   allocation, well under a microsecond (the `lookup` benchmark).
//!
//! # What it deliberately does not do
//!
//! The ring does not know which nodes are up: [`PreferenceList::select`]
//! takes that opinion as an argument. It does not move data, schedule
//! handoff or decide when a new ring takes effect: a [`TransferPlan`] says
//! what moves, and the node crate moves it. It does not discover members or
//! agree on changes: membership is gossip's, and an operator's action
//! (join, leave) is what produces a change. It does no I/O, reads no clock
//! and draws no random numbers.
//!
//! # Preference lists and sloppy quorum
//!
//! A partition's [`PreferenceList`] is its N primaries, then
//! `min(members − N, 2N)` fallbacks, all distinct. Fallbacks are ordered per
//! partition: the next one is always from the zone least represented in the
//! list so far, ties broken by rendezvous hashing (a per-partition hash of
//! each node id). With one zone this is pure rendezvous order, so the
//! partitions of a down node fall back onto many different nodes instead of
//! all onto its neighbour. [`PreferenceList::select`] walks the list with a
//! health predicate and returns up to N [`Target`]s: each primary that is up,
//! and for each primary that is down the next fallback that is up, naming the
//! primary it stands in for (the owner a hint is for).
//!
//! # The claim algorithm
//!
//! Placement is a flow problem. Picture a network: a source; one vertex per
//! partition (capacity N from the source); one per (partition, zone)
//! (capacity: the zone limit); one per node (capacity 1 from each of its
//! zone's partition slots, so a node holds a partition at most once); a sink,
//! fed by each node up to the floor of its target, and by one *pool* per
//! zone, which each node with a fractional target may feed once, and which
//! may pass to the sink as many units as the zone's total exceeds the sum of
//! its nodes' floors. A ring is an integral flow that saturates the source;
//! moving a replica is augmenting that flow.
//!
//! 1. **Targets.** Each node's target is its weight share of `P × N`,
//!    water-filled under the caps (a node at most P; a zone at most
//!    `min(limit, its size) × P`) and computed as exact rationals. Zone
//!    totals are rounded to integers (extra units first to zones already
//!    holding more, so rounding forces no move); each node must end at the
//!    floor or the ceiling of its target, and the zone's pool says how many
//!    of its nodes sit at the ceiling. *Which* nodes those are is left to the
//!    placement, so that the nodes that can take replicas without moving
//!    others are the ones that round up. The targets are a fractional flow
//!    (each partition gives node `i` the fraction `target_i / P`), so by the
//!    integrality of network flows an integral placement within these bounds
//!    always exists.
//! 2. **Keep.** Start from the previous ring's placement (nothing for an
//!    initial ring), keeping each replica in its slot while its node is
//!    still a member; then empty the slots that break the zone rule (taking
//!    the replica of the node most loaded for its weight).
//! 3. **Fill.** Fill empty slots partition by partition, each with the
//!    eligible node (not in the partition, room in its zone, may still gain)
//!    whose load after taking it is the smallest fraction of its target.
//!    Equally full nodes are ordered by a hash of (node, load), a fresh
//!    pseudo-random order at every load level, so each node shares its
//!    partitions with many different nodes and a failure spreads its load.
//! 4. **Shed.** Nodes that may gain take replicas directly from nodes that
//!    must shed (above their ceiling, or above their floor in a zone over its
//!    pool), the fullest for its target first, choosing among its partitions
//!    in a per-(partition, node) hash order, so a newcomer's partitions are
//!    spread over the whole ring.
//! 5. **Augment.** What the greedy steps cannot do (an empty slot whose
//!    eligible nodes are all full, a node that must shed whose partitions
//!    all hold every node that may gain) is finished with shortest augmenting
//!    paths, found by breadth-first search of the residual graph: chains like
//!    "A takes this slot and gives up one of its partitions to B, which…".
//!    Paths that only rearrange replicas placed by this very claim are tried
//!    first, since they cost no extra move against the previous ring. A path
//!    exists whenever the placement is not yet within its bounds, so the
//!    final ring always is.
//!
//! A ring already within its bounds is left as it is: every move serves a
//! change of membership, weight or zone. The `balance` example prints the
//! balance and movement figures for P = 256 and 4096 and 3 to 256 nodes;
//! building a ring of 4096 partitions on 256 nodes takes milliseconds.
//!
//! Compared with the references: Riak's claim (v2 to v4) walks the ring and
//! swaps vnodes to satisfy a spacing target ("tail violations"), because its
//! preference lists are read off ring adjacency, and its balance and moves
//! depend on the ring's history. Here preference lists are explicit per
//! partition, so adjacency does not matter, and balance is exact rather than
//! heuristic. Garage's layout also solves a max-flow under a zone-redundancy
//! constraint and then reduces transfers with a min-cost pass, maximising
//! usable capacity; here targets are set first (exact proportional balance)
//! and the previous placement is repaired in place with greedy moves and
//! shortest augmenting paths.

mod claim;
mod error;
mod hashing;
mod member;
mod partition;
mod preflist;
mod ring;
mod transfer;

pub use error::RingError;
pub use member::{Member, MemberChange, NodeId, MAX_MEMBERS, MAX_ZONE_LEN};
pub use partition::{
    key_hash, PartitionId, Partitions, DEFAULT_PARTITIONS, MAX_PARTITIONS, MIN_PARTITIONS,
};
pub use preflist::{PreferenceList, Replica, Role, Selection, Target};
pub use ring::{Ring, RingHash, DEFAULT_REPLICAS, MAX_REPLICAS};
pub use transfer::{NodeTransfers, Transfer, TransferPlan};
