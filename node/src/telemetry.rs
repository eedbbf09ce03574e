//! The node's metrics: their names, their labels, and one Prometheus
//! recorder per node.
//!
//! Metrics are recorded through the [`metrics`] facade and exposed by
//! [`metrics_exporter_prometheus`] in the Prometheus text format at
//! `GET /metrics` (`docs/metrics.md` lists every metric). Names follow
//! Prometheus conventions: the `chorus_` prefix, base units (seconds, bytes)
//! as suffixes, and `_total` on counters.
//!
//! # One recorder per node
//!
//! `chorus dev` runs several nodes in one process, so a process-wide
//! recorder would mix their figures. Each node owns a [`NodeMetrics`] and
//! records into it with [`NodeMetrics::record`] (the facade's
//! [`with_local_recorder`](metrics::with_local_recorder)): around the whole
//! of its membership and shard threads, and around the HTTP layer's
//! recording of each request.
//! Code outside such a scope — the simulator, which runs many engines in one
//! process and installs no recorder — records into the facade's no-op
//! recorder: a metric never changes what the engine does.
//!
//! # What is recorded where
//!
//! * The HTTP layer: [`record_request`] for every key request (count and
//!   latency by operation, consistency and outcome).
//! * The membership and shard threads (runtime): [`record_reply`] for
//!   every client reply (siblings per read, quorum failures),
//!   [`PeerFrames`] for frames sent, received, refused and failed per peer.
//! * At scrape time: [`record_node_stats`] turns the engine's counters, the
//!   hint queues, gossip's view and the store's figures into counters and
//!   gauges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::api::{ClusterStatus, RequestError};
use crate::core::Quorum;
use crate::engine::ClientReply;
use crate::runtime::NodeStats;

/// Client requests by `operation`, `consistency` and `outcome` (counter).
pub const REQUESTS_TOTAL: &str = "chorus_requests_total";
/// Latency of client requests in seconds, same labels (histogram).
pub const REQUEST_DURATION_SECONDS: &str = "chorus_request_duration_seconds";
/// Client requests that missed their quorum or timed out, by `operation`
/// (`read`, `write`) and `kind` (the error's code) (counter).
pub const QUORUM_FAILURES_TOTAL: &str = "chorus_quorum_failures_total";
/// Live versions per successful read, 0 for not found (histogram).
pub const READ_SIBLINGS: &str = "chorus_read_siblings";
/// Gets coordinated by this node (counter).
pub const GETS_TOTAL: &str = "chorus_gets_total";
/// Puts and deletes received by this node (counter).
pub const PUTS_TOTAL: &str = "chorus_puts_total";
/// Writes forwarded to a replica of their key (counter).
pub const FORWARDED_TOTAL: &str = "chorus_forwarded_total";
/// Client requests refused as overloaded by the engine (counter).
pub const OVERLOADED_TOTAL: &str = "chorus_overloaded_total";
/// Requests in flight on this node (gauge).
pub const REQUESTS_PENDING: &str = "chorus_requests_pending";
/// Client requests waiting for admission (gauge).
pub const REQUESTS_QUEUED: &str = "chorus_requests_queued";
/// Stale replicas sent the merged object after a get (counter).
pub const READ_REPAIRS_TOTAL: &str = "chorus_read_repairs_total";
/// Read repairs not sent because background work held its budget (counter).
pub const READ_REPAIRS_SKIPPED_TOTAL: &str = "chorus_read_repairs_skipped_total";
/// Background requests handed to hinted handoff because one replica held
/// most of the background budget (counter).
pub const BACKGROUND_SHED_TOTAL: &str = "chorus_background_shed_total";
/// Hints queued on this node for other nodes (gauge).
pub const HINTS_PENDING: &str = "chorus_hints_pending";
/// Hints acknowledged by their primary and deleted (counter).
pub const HINTS_DELIVERED_TOTAL: &str = "chorus_hints_delivered_total";
/// Hints that could not be queued (counter).
pub const HINTS_DROPPED_TOTAL: &str = "chorus_hints_dropped_total";
/// Cluster members by this node's view of their `liveness` (gauge).
pub const GOSSIP_MEMBERS: &str = "chorus_gossip_members";
/// Frames handed to the transport, by `peer` (counter).
pub const FRAMES_SENT_TOTAL: &str = "chorus_frames_sent_total";
/// Frames that could not be sent, by `peer` (counter).
pub const FRAMES_SEND_FAILED_TOTAL: &str = "chorus_frames_send_failed_total";
/// Frames received and decoded, by `peer` (counter).
pub const FRAMES_RECEIVED_TOTAL: &str = "chorus_frames_received_total";
/// Frames received that did not decode, by `peer` (counter).
pub const FRAMES_REFUSED_TOTAL: &str = "chorus_frames_refused_total";
/// Data-plane frames dropped as coming from an older incarnation (counter).
pub const FRAMES_STALE_TOTAL: &str = "chorus_frames_stale_total";
/// `rocksdb.estimate-live-data-size` (gauge, bytes).
pub const ROCKSDB_LIVE_DATA_BYTES: &str = "chorus_rocksdb_live_data_bytes";
/// `rocksdb.cur-size-all-mem-tables` (gauge, bytes).
pub const ROCKSDB_MEMTABLE_BYTES: &str = "chorus_rocksdb_memtable_bytes";
/// Bytes of RocksDB's block cache in use (gauge).
pub const ROCKSDB_BLOCK_CACHE_BYTES: &str = "chorus_rocksdb_block_cache_bytes";
/// Bytes of the store's object cache in use (gauge).
pub const OBJECT_CACHE_BYTES: &str = "chorus_object_cache_bytes";
/// `rocksdb.estimate-pending-compaction-bytes` (gauge, bytes).
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "chorus_rocksdb_pending_compaction_bytes";

/// Upper bounds of the latency histogram's buckets, in seconds: 0.5 ms to
/// 10 s, about ×2.5 apart (Prometheus client libraries' defaults, reaching
/// a little lower for fast local reads).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the siblings-per-read histogram's buckets.
pub const SIBLINGS_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// The label value for a peer whose address this node cannot name yet.
pub const UNKNOWN_PEER: &str = "unknown";

/// One node's metrics: a Prometheus recorder and the handle that renders
/// it. Cheap to clone (both are shared).
#[derive(Clone)]
pub struct NodeMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    /// A fresh recorder with every metric described (its `# HELP` line)
    /// and the histograms' buckets set.
    pub fn new() -> NodeMetrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION_SECONDS.into()),
                LATENCY_BUCKETS,
            )
            .and_then(|builder| {
                builder
                    .set_buckets_for_metric(Matcher::Full(READ_SIBLINGS.into()), SIBLINGS_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = NodeMetrics {
            recorder: Arc::new(recorder),
            handle,
        };
        metrics.record(describe);
        metrics
    }

    /// Runs `f` with this node's recorder as the thread's recorder: every
    /// metric `f` records goes to this node.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// Everything recorded so far, in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recent histogram samples into the histograms. Rendering does
    /// it too; this bounds the memory they hold when nobody scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Client requests by operation, consistency and outcome."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of client requests, by operation, consistency and outcome."
    );
    describe_counter!(
        QUORUM_FAILURES_TOTAL,
        Unit::Count,
        "Client requests that missed their quorum or timed out, by operation and kind."
    );
    describe_histogram!(
        READ_SIBLINGS,
        Unit::Count,
        "Live versions per successful read (0 for not found)."
    );
    describe_counter!(GETS_TOTAL, Unit::Count, "Gets coordinated by this node.");
    describe_counter!(
        PUTS_TOTAL,
        Unit::Count,
        "Puts and deletes received by this node."
    );
    describe_counter!(
        FORWARDED_TOTAL,
        Unit::Count,
        "Writes forwarded to a replica of their key."
    );
    describe_counter!(
        OVERLOADED_TOTAL,
        Unit::Count,
        "Client requests the engine refused as overloaded."
    );
    describe_gauge!(
        REQUESTS_PENDING,
        Unit::Count,
        "Requests in flight on this node."
    );
    describe_gauge!(
        REQUESTS_QUEUED,
        Unit::Count,
        "Client requests waiting for admission."
    );
    describe_counter!(
        READ_REPAIRS_TOTAL,
        Unit::Count,
        "Stale replicas sent the merged object after a get."
    );
    describe_counter!(
        READ_REPAIRS_SKIPPED_TOTAL,
        Unit::Count,
        "Read repairs not sent because background work held its byte budget."
    );
    describe_counter!(
        BACKGROUND_SHED_TOTAL,
        Unit::Count,
        "Background requests handed to hinted handoff because one replica held most of the background budget."
    );
    describe_gauge!(
        HINTS_PENDING,
        Unit::Count,
        "Hints queued on this node for other nodes."
    );
    describe_counter!(
        HINTS_DELIVERED_TOTAL,
        Unit::Count,
        "Hints acknowledged by their primary and deleted."
    );
    describe_counter!(
        HINTS_DROPPED_TOTAL,
        Unit::Count,
        "Hints that could not be queued (queue full or storage error)."
    );
    describe_gauge!(
        GOSSIP_MEMBERS,
        Unit::Count,
        "Cluster members (not left) by this node's view of their liveness."
    );
    describe_counter!(
        FRAMES_SENT_TOTAL,
        Unit::Count,
        "Internode frames handed to the transport, by peer."
    );
    describe_counter!(
        FRAMES_SEND_FAILED_TOTAL,
        Unit::Count,
        "Internode frames that could not be sent, by peer."
    );
    describe_counter!(
        FRAMES_RECEIVED_TOTAL,
        Unit::Count,
        "Internode frames received and decoded, by peer."
    );
    describe_counter!(
        FRAMES_REFUSED_TOTAL,
        Unit::Count,
        "Internode frames received that did not decode, by peer."
    );
    describe_counter!(
        FRAMES_STALE_TOTAL,
        Unit::Count,
        "Data-plane frames dropped as coming from an older incarnation of their sender."
    );
    describe_gauge!(
        ROCKSDB_LIVE_DATA_BYTES,
        Unit::Bytes,
        "RocksDB's estimate of live data in SST files (rocksdb.estimate-live-data-size)."
    );
    describe_gauge!(
        ROCKSDB_MEMTABLE_BYTES,
        Unit::Bytes,
        "Bytes in RocksDB's memtables (rocksdb.cur-size-all-mem-tables)."
    );
    describe_gauge!(
        ROCKSDB_BLOCK_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of RocksDB's block cache in use (rocksdb.block-cache-usage)."
    );
    describe_gauge!(
        OBJECT_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of the store's cache of decoded objects in use, as the cache estimates them."
    );
    describe_gauge!(
        ROCKSDB_PENDING_COMPACTION_BYTES,
        Unit::Bytes,
        "Bytes RocksDB estimates compaction has to rewrite (rocksdb.estimate-pending-compaction-bytes)."
    );
}

/// A client operation, the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
    Delete,
}

impl Operation {
    /// The label value: `get`, `put` or `delete`.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::Delete => "delete",
        }
    }
}

/// The `consistency` label of a request: its `r` (gets) or `w` (puts,
/// deletes) as the client asked for it — `one`, `quorum` (also when not
/// given: the default), `all`, or `custom` for an explicit count. Counts
/// are folded into `custom` so a client cannot grow the label set.
pub fn consistency_label(quorum: Quorum) -> &'static str {
    match quorum {
        Quorum::One => "one",
        Quorum::Majority => "quorum",
        Quorum::All => "all",
        Quorum::Count(_) => "custom",
    }
}

/// The `consistency` label of a request refused before its options were
/// read (a bad path or bad options).
pub const CONSISTENCY_UNKNOWN: &str = "unknown";

/// Records one client request: its count and its latency.
///
/// `outcome` is `ok`, `siblings` (a read that found several live
/// versions), `not_found`, or the stable code of the error answered.
pub fn record_request(
    operation: Operation,
    consistency: &'static str,
    outcome: &str,
    elapsed: Duration,
) {
    let labels = [
        ("operation", operation.label().to_owned()),
        ("consistency", consistency.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    counter!(REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, &labels).record(elapsed.as_secs_f64());
}

/// Records what a reply to a client shows: the live versions a read found,
/// or the kind of a quorum failure.
pub fn record_reply(result: &Result<ClientReply, RequestError>) {
    match result {
        Ok(ClientReply::Read(reply)) => {
            metrics::histogram!(READ_SIBLINGS).record(reply.object.live().count() as f64)
        }
        Ok(ClientReply::Write(_)) => {}
        Err(RequestError::Get(error)) => {
            counter!(QUORUM_FAILURES_TOTAL, "operation" => "read", "kind" => error.code())
                .increment(1)
        }
        Err(RequestError::Put(error)) => {
            counter!(QUORUM_FAILURES_TOTAL, "operation" => "write", "kind" => error.code())
                .increment(1)
        }
        Err(_) => {}
    }
}

/// Sets the counters and gauges that come from a snapshot of the node.
pub fn record_node_stats(stats: &NodeStats) {
    let e = &stats.engine;
    counter!(GETS_TOTAL).absolute(e.gets);
    counter!(PUTS_TOTAL).absolute(e.puts);
    counter!(FORWARDED_TOTAL).absolute(e.forwarded);
    counter!(OVERLOADED_TOTAL).absolute(e.refused_overloaded);
    gauge!(REQUESTS_PENDING).set(e.pending_requests as f64);
    gauge!(REQUESTS_QUEUED).set(e.queued_requests as f64);
    counter!(READ_REPAIRS_TOTAL).absolute(e.read_repairs);
    counter!(READ_REPAIRS_SKIPPED_TOTAL).absolute(e.read_repairs_skipped);
    counter!(BACKGROUND_SHED_TOTAL).absolute(e.background_shed);
    gauge!(HINTS_PENDING).set(stats.pending_hints as f64);
    counter!(HINTS_DELIVERED_TOTAL).absolute(e.hints_delivered);
    counter!(HINTS_DROPPED_TOTAL).absolute(e.hints_dropped);
    counter!(FRAMES_STALE_TOTAL).absolute(e.frames_stale);
    for (liveness, count) in [
        ("up", stats.members.up),
        ("down", stats.members.down),
        ("unknown", stats.members.unknown),
    ] {
        gauge!(GOSSIP_MEMBERS, "liveness" => liveness).set(count as f64);
    }
    let store = &stats.store;
    for (name, value) in [
        (ROCKSDB_LIVE_DATA_BYTES, store.live_data_bytes),
        (ROCKSDB_MEMTABLE_BYTES, store.memtable_bytes),
        (ROCKSDB_BLOCK_CACHE_BYTES, store.block_cache_bytes),
        (OBJECT_CACHE_BYTES, store.object_cache_bytes),
        (
            ROCKSDB_PENDING_COMPACTION_BYTES,
            store.pending_compaction_bytes,
        ),
    ] {
        if let Some(value) = value {
            gauge!(name).set(value as f64);
        }
    }
}

/// Cluster members by this node's view of their liveness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembersByLiveness {
    pub up: usize,
    pub down: usize,
    pub unknown: usize,
}

impl MembersByLiveness {
    /// Counts the members of `status` that have not left (this node
    /// counts as up).
    pub fn of(status: &ClusterStatus) -> MembersByLiveness {
        let mut counts = MembersByLiveness::default();
        for member in status.members.iter().filter(|m| m.status != "left") {
            match member.liveness.as_str() {
                "up" => counts.up += 1,
                "down" => counts.down += 1,
                _ => counts.unknown += 1,
            }
        }
        counts
    }
}

/// The frame counters of one peer.
#[derive(Debug, Clone)]
pub struct FrameCounters {
    pub sent: Counter,
    pub send_failed: Counter,
    pub received: Counter,
    pub refused: Counter,
}

impl FrameCounters {
    /// The counters labelled `peer`, in the current recorder.
    fn of(peer: String) -> FrameCounters {
        FrameCounters {
            sent: counter!(FRAMES_SENT_TOTAL, "peer" => peer.clone()),
            send_failed: counter!(FRAMES_SEND_FAILED_TOTAL, "peer" => peer.clone()),
            received: counter!(FRAMES_RECEIVED_TOTAL, "peer" => peer.clone()),
            refused: counter!(FRAMES_REFUSED_TOTAL, "peer" => peer),
        }
    }
}

/// Frame counters per peer address, labelled with the peer's node name:
/// bounded by the cluster's size. An address whose member, or its name,
/// this node has not learned yet is counted under [`UNKNOWN_PEER`] and
/// looked up again later.
///
/// Must be used within the node's recorder scope (its membership and shard
/// threads).
#[derive(Debug)]
pub struct PeerFrames {
    by_addr: HashMap<SocketAddr, FrameCounters>,
    unknown: Option<FrameCounters>,
}

impl Default for PeerFrames {
    fn default() -> Self {
        PeerFrames::new()
    }
}

impl PeerFrames {
    pub fn new() -> PeerFrames {
        PeerFrames {
            by_addr: HashMap::new(),
            unknown: None,
        }
    }

    /// Whether `addr` has counters of its own.
    pub fn knows(&self, addr: &SocketAddr) -> bool {
        self.by_addr.contains_key(addr)
    }

    /// Learns the members' addresses and names from `status`, forgetting
    /// addresses no member has any more (the series stay in the recorder).
    pub fn learn(&mut self, status: &ClusterStatus) {
        self.by_addr.clear();
        for member in &status.members {
            // A member whose name has not arrived yet stays unlearned, so
            // its address is looked up again rather than labelled for good
            // by a stand-in.
            let Some(addr) = member.quic_addr else {
                continue;
            };
            if member.name.is_empty() {
                continue;
            }
            self.by_addr
                .insert(addr, FrameCounters::of(member.name.clone()));
        }
    }

    /// The counters of the peer at `addr`.
    pub fn of(&mut self, addr: &SocketAddr) -> &FrameCounters {
        if self.by_addr.contains_key(addr) {
            return &self.by_addr[addr];
        }
        self.unknown
            .get_or_insert_with(|| FrameCounters::of(UNKNOWN_PEER.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{GetError, PutError, QuorumTally};

    fn tally() -> QuorumTally {
        QuorumTally {
            required: 2,
            required_primaries: 0,
            received: 1,
            received_primaries: 1,
            failures: Vec::new(),
        }
    }

    /// The value of the series `metric` with exactly `labels`, from a
    /// render parsed as Prometheus text.
    fn series(metrics: &NodeMetrics, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = metrics.render();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("Prometheus text");
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                ref other => panic!("{metric}: {other:?}"),
            })
    }

    #[test]
    fn quorum_failures_are_counted_by_operation_and_kind() {
        let metrics = NodeMetrics::new();
        let failures: [Result<ClientReply, RequestError>; 4] = [
            Err(GetError::QuorumNotReached(tally()).into()),
            Err(GetError::Timeout(tally()).into()),
            Err(PutError::Indeterminate {
                tally: tally(),
                applied: 1,
            }
            .into()),
            Err(PutError::Indeterminate {
                tally: tally(),
                applied: 1,
            }
            .into()),
        ];
        metrics.record(|| failures.iter().for_each(record_reply));
        let kind = |operation, kind| {
            series(
                &metrics,
                QUORUM_FAILURES_TOTAL,
                &[("operation", operation), ("kind", kind)],
            )
        };
        assert_eq!(kind("read", "quorum_not_reached"), Some(1.0));
        assert_eq!(kind("read", "timeout"), Some(1.0));
        assert_eq!(kind("write", "timeout_indeterminate"), Some(2.0));
        assert_eq!(kind("write", "quorum_not_reached"), None);
    }

    #[test]
    fn outside_a_node_recorder_nothing_is_recorded() {
        let metrics = NodeMetrics::new();
        record_reply(&Err(GetError::Timeout(tally()).into()));
        assert_eq!(
            series(
                &metrics,
                QUORUM_FAILURES_TOTAL,
                &[("operation", "read"), ("kind", "timeout")]
            ),
            None
        );
    }

    #[test]
    fn consistency_labels_fold_counts_into_custom() {
        assert_eq!(consistency_label(Quorum::One), "one");
        assert_eq!(consistency_label(Quorum::Majority), "quorum");
        assert_eq!(consistency_label(Quorum::All), "all");
        assert_eq!(consistency_label(Quorum::Count(2)), "custom");
        assert_eq!(consistency_label(Quorum::Count(u32::MAX)), "custom");
    }
}
