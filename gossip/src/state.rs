//! The versioned state each node publishes about itself.
//!
//! A node's state is a heartbeat plus a small map of application state
//! entries (addresses, status, zone, ring claim, load, free-form extras).
//! Every item carries a [`Version`] drawn from one counter per node and
//! generation, so "everything newer than version v" is a well-defined delta
//! and a digest `(node, generation, max version)` says exactly what a peer has.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::size;

/// A node's identity: generated once and persisted in its data directory.
pub type NodeId = uuid::Uuid;

/// The generation clock of a node: persisted and incremented by the caller at
/// every start. State from a higher generation supersedes everything older.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A version within one generation of one node. Versions increase with every
/// heartbeat and every state change; they are never compared across nodes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a node stands in its membership lifecycle, as the node itself (or
/// an operator removing it) declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Started and learning the cluster; does not own data yet.
    Joining,
    /// A full member.
    Up,
    /// Handing its data off before leaving.
    Leaving,
    /// Gone for good (left gracefully or removed by an operator). Remembered
    /// for a quarantine period so the node cannot come back as a ghost.
    Left,
}

impl Status {
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            Status::Joining => "Joining",
            Status::Up => "Up",
            Status::Leaving => "Leaving",
            Status::Left => "Left",
        }
    }
}

/// The key of an application state entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateKey {
    /// Address of the node's QUIC endpoint (internode and client traffic). Holds [`StateValue::Addr`].
    QuicAddr,
    /// Address of the node's HTTP API. Holds [`StateValue::Addr`].
    HttpAddr,
    /// Lifecycle status. Holds [`StateValue::Status`].
    Status,
    /// Failure zone (rack, availability zone). Holds [`StateValue::Text`].
    Zone,
    /// The ring this node holds, by version and hash. Holds [`StateValue::Ring`].
    Ring,
    /// Bytes of data stored on the node. Holds [`StateValue::Load`].
    Load,
    /// A free-form entry named by the application. Holds [`StateValue::Text`].
    Extra(String),
}

impl StateKey {
    /// Whether `value` is the kind of value this key holds.
    pub fn accepts(&self, value: &StateValue) -> bool {
        matches!(
            (self, value),
            (StateKey::QuicAddr | StateKey::HttpAddr, StateValue::Addr(_))
                | (StateKey::Status, StateValue::Status(_))
                | (StateKey::Zone | StateKey::Extra(_), StateValue::Text(_))
                | (StateKey::Ring, StateValue::Ring(_))
                | (StateKey::Load, StateValue::Load(_))
        )
    }

    /// Length of the free-form name, for [`StateKey::Extra`].
    pub(crate) fn name_len(&self) -> usize {
        match self {
            StateKey::Extra(name) => name.len(),
            _ => 0,
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            StateKey::QuicAddr => size::unit_variant("QuicAddr"),
            StateKey::HttpAddr => size::unit_variant("HttpAddr"),
            StateKey::Status => size::unit_variant("Status"),
            StateKey::Zone => size::unit_variant("Zone"),
            StateKey::Ring => size::unit_variant("Ring"),
            StateKey::Load => size::unit_variant("Load"),
            StateKey::Extra(name) => size::newtype_variant("Extra") + size::str(name.len()),
        }
    }
}

/// The ring a node holds: its version and a hash of its placement, so that
/// disagreement between nodes is visible in gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RingClaim {
    /// Ring version, increasing with every membership change the ring reflects.
    pub version: u64,
    /// Hash of the placement.
    pub hash: u64,
}

/// The value of an application state entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateValue {
    /// A network address.
    Addr(SocketAddr),
    /// A lifecycle status.
    Status(Status),
    /// Text (zone, extras).
    Text(String),
    /// A ring claim.
    Ring(RingClaim),
    /// Bytes of data stored.
    Load(u64),
}

impl StateValue {
    /// Length of the text, for [`StateValue::Text`].
    pub(crate) fn text_len(&self) -> usize {
        match self {
            StateValue::Text(text) => text.len(),
            _ => 0,
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            StateValue::Addr(addr) => size::newtype_variant("Addr") + size::socket_addr(addr),
            StateValue::Status(status) => {
                size::newtype_variant("Status") + size::unit_variant(status.wire_name())
            }
            StateValue::Text(text) => size::newtype_variant("Text") + size::str(text.len()),
            StateValue::Ring(ring) => {
                size::newtype_variant("Ring")
                    + size::array_header(2)
                    + size::uint(ring.version)
                    + size::uint(ring.hash)
            }
            StateValue::Load(load) => size::newtype_variant("Load") + size::uint(*load),
        }
    }
}

/// One versioned application state entry, as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Which entry.
    pub key: StateKey,
    /// Version at which the node (or an operator) set it.
    pub version: Version,
    /// Its value.
    pub value: StateValue,
}

impl Entry {
    pub(crate) fn encoded_len(&self) -> usize {
        size::array_header(3)
            + self.key.encoded_len()
            + size::uint(self.version.0)
            + self.value.encoded_len()
    }
}

/// A value with the version at which it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Version at which the value was set.
    pub version: Version,
    /// The value.
    pub value: StateValue,
}

/// What one node has published about itself, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    generation: Generation,
    heartbeat: Version,
    max_version: Version,
    /// Highest version among the entries (not the heartbeat).
    max_entry_version: Version,
    /// Sorted by key; a node has a handful of entries, so a vector beats a
    /// tree in both memory and time.
    entries: Vec<(StateKey, Versioned)>,
}

/// What applying a delta changed.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The heartbeat advanced.
    pub heartbeat_advanced: bool,
    /// Entries whose value changed, in key order.
    pub changed: Vec<(StateKey, StateValue)>,
}

impl NodeState {
    /// The state a full delta (`since` 0) describes.
    pub(crate) fn from_full_delta(delta: &NodeDelta) -> Self {
        debug_assert_eq!(delta.since, Version(0));
        let mut state = NodeState::new(delta.generation);
        state.entries.reserve_exact(delta.entries.len());
        state.apply(delta);
        state
    }

    /// An empty state at `generation`: heartbeat 0, no entries.
    pub(crate) fn new(generation: Generation) -> Self {
        NodeState {
            generation,
            heartbeat: Version(0),
            max_version: Version(0),
            max_entry_version: Version(0),
            entries: Vec::new(),
        }
    }

    /// The node's generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The version of the node's latest heartbeat known here.
    pub fn heartbeat(&self) -> Version {
        self.heartbeat
    }

    /// The highest version of anything known about the node in this generation.
    pub fn max_version(&self) -> Version {
        self.max_version
    }

    /// One entry.
    pub fn get(&self, key: &StateKey) -> Option<&Versioned> {
        self.entries
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// All entries, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&StateKey, &Versioned)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Stores `value` at `version` under `key`, if newer than what is there.
    /// Returns whether the value changed.
    fn store(&mut self, key: &StateKey, version: Version, value: &StateValue) -> bool {
        self.max_entry_version = self.max_entry_version.max(version);
        self.max_version = self.max_version.max(version);
        match self.entries.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(i) => {
                let current = &mut self.entries[i].1;
                if version <= current.version {
                    return false;
                }
                current.version = version;
                if current.value == *value {
                    return false;
                }
                current.value = value.clone();
                true
            }
            Err(i) => {
                let value = value.clone();
                self.entries
                    .insert(i, (key.clone(), Versioned { version, value }));
                true
            }
        }
    }

    /// The published status, if any.
    pub fn status(&self) -> Option<Status> {
        match self.get(&StateKey::Status).map(|v| &v.value) {
            Some(StateValue::Status(s)) => Some(*s),
            _ => None,
        }
    }

    /// The published QUIC address, if any.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.addr(&StateKey::QuicAddr)
    }

    /// The published HTTP address, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.addr(&StateKey::HttpAddr)
    }

    /// The published zone, if any.
    pub fn zone(&self) -> Option<&str> {
        match self.get(&StateKey::Zone).map(|v| &v.value) {
            Some(StateValue::Text(z)) => Some(z),
            _ => None,
        }
    }

    /// The published ring claim, if any.
    pub fn ring(&self) -> Option<RingClaim> {
        match self.get(&StateKey::Ring).map(|v| &v.value) {
            Some(StateValue::Ring(r)) => Some(*r),
            _ => None,
        }
    }

    /// The published load in bytes, if any.
    pub fn load(&self) -> Option<u64> {
        match self.get(&StateKey::Load).map(|v| &v.value) {
            Some(StateValue::Load(l)) => Some(*l),
            _ => None,
        }
    }

    fn addr(&self, key: &StateKey) -> Option<SocketAddr> {
        match self.get(key).map(|v| &v.value) {
            Some(StateValue::Addr(a)) => Some(*a),
            _ => None,
        }
    }

    /// Sets the heartbeat to the next version (local node only).
    pub(crate) fn beat(&mut self) {
        self.max_version = Version(self.max_version.0.saturating_add(1));
        self.heartbeat = self.max_version;
    }

    /// Sets an entry at the next version (local node, or an operator acting
    /// for a removed node). Returns false, changing nothing, when the value is
    /// already the current one, or when the versions are exhausted (a peer
    /// claimed the largest version there is).
    pub(crate) fn set(&mut self, key: StateKey, value: StateValue) -> bool {
        if self.get(&key).is_some_and(|v| v.value == value) {
            return false;
        }
        let Some(next) = self.max_version.0.checked_add(1) else {
            return false;
        };
        self.store(&key, Version(next), &value)
    }

    /// Everything newer than `since`, oldest first, as a delta for `node`.
    pub(crate) fn delta_since(&self, node: NodeId, since: Version) -> NodeDelta {
        let heartbeat = (self.heartbeat > since).then_some(self.heartbeat);
        if self.max_entry_version <= since {
            // The common case in a settled cluster: only the heartbeat moved.
            return NodeDelta {
                node,
                generation: self.generation,
                since,
                heartbeat,
                entries: Vec::new(),
            };
        }
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(_, v)| v.version > since)
            .map(|(k, v)| Entry {
                key: k.clone(),
                version: v.version,
                value: v.value.clone(),
            })
            .collect();
        entries.sort_by_key(|e| e.version);
        NodeDelta {
            node,
            generation: self.generation,
            since,
            heartbeat,
            entries,
        }
    }

    /// Whether anything other than the heartbeat is newer than `since`.
    pub(crate) fn has_entries_since(&self, since: Version) -> bool {
        self.max_entry_version > since
    }

    /// Applies a delta of the same generation whose `since` is at or below
    /// this state's max version (the caller checks both).
    pub(crate) fn apply(&mut self, delta: &NodeDelta) -> Applied {
        debug_assert_eq!(delta.generation, self.generation);
        debug_assert!(delta.since <= self.max_version);
        let mut applied = Applied::default();
        if let Some(hb) = delta.heartbeat {
            if hb > self.heartbeat {
                self.heartbeat = hb;
                applied.heartbeat_advanced = true;
            }
            self.max_version = self.max_version.max(hb);
        }
        for entry in &delta.entries {
            if self.store(&entry.key, entry.version, &entry.value) {
                applied
                    .changed
                    .push((entry.key.clone(), entry.value.clone()));
            }
        }
        applied
    }
}

/// Everything one node's state holds with a version in `(since, max]`, where
/// max is the highest version it carries: a contiguous slice of the node's
/// history, so a receiver that knew everything up to `since` then knows
/// everything up to max.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDelta {
    /// Whose state.
    pub node: NodeId,
    /// Its generation.
    pub generation: Generation,
    /// The delta holds every item newer than this version (0: the whole state).
    pub since: Version,
    /// The heartbeat, when it is newer than `since`.
    pub heartbeat: Option<Version>,
    /// Entries newer than `since`, oldest first.
    pub entries: Vec<Entry>,
}

impl NodeDelta {
    /// The highest version this delta carries, or `since` when it is empty.
    pub fn max_version(&self) -> Version {
        let entries = self.entries.iter().map(|e| e.version).max();
        self.since
            .max(self.heartbeat.unwrap_or_default())
            .max(entries.unwrap_or_default())
    }

    pub(crate) fn encoded_len(&self) -> usize {
        size::array_header(5)
            + size::UUID
            + size::uint(self.generation.0)
            + size::uint(self.since.0)
            + self.heartbeat.map_or(1, |v| size::uint(v.0))
            + size::array_header(self.entries.len())
            + self.entries.iter().map(Entry::encoded_len).sum::<usize>()
    }

    /// Cuts the delta to its oldest items so that it encodes in at most
    /// `budget` bytes. The result is still contiguous from `since`. Returns
    /// the encoded length, or `None` (leaving the delta unchanged) when not
    /// even one item fits.
    pub(crate) fn truncate_to(&mut self, budget: usize) -> Option<usize> {
        let full = self.encoded_len();
        if full <= budget {
            return Some(full);
        }
        let fixed = size::array_header(5)
            + size::UUID
            + size::uint(self.generation.0)
            + size::uint(self.since.0);
        // Walk the items in version order (the heartbeat sits among the
        // entries) and remember the longest prefix that fits.
        let mut best = None;
        let (mut taken, mut with_heartbeat, mut entry_bytes) = (0usize, false, 0usize);
        loop {
            let heartbeat_next = !with_heartbeat
                && self
                    .heartbeat
                    .is_some_and(|h| self.entries.get(taken).is_none_or(|e| h < e.version));
            if heartbeat_next {
                with_heartbeat = true;
            } else if let Some(entry) = self.entries.get(taken) {
                entry_bytes += entry.encoded_len();
                taken += 1;
            } else {
                break;
            }
            let heartbeat_bytes = match (with_heartbeat, self.heartbeat) {
                (true, Some(h)) => size::uint(h.0),
                _ => 1,
            };
            let len = fixed + heartbeat_bytes + size::array_header(taken) + entry_bytes;
            if len > budget {
                break;
            }
            best = Some((taken, with_heartbeat, len));
        }
        let (taken, with_heartbeat, len) = best?;
        self.entries.truncate(taken);
        if !with_heartbeat {
            self.heartbeat = None;
        }
        debug_assert_eq!(len, self.encoded_len());
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> StateValue {
        StateValue::Addr(s.parse().expect("address"))
    }

    #[test]
    fn keys_accept_only_their_kind_of_value() {
        assert!(StateKey::QuicAddr.accepts(&addr("10.0.0.1:1")));
        assert!(!StateKey::QuicAddr.accepts(&StateValue::Load(1)));
        assert!(StateKey::Extra("x".into()).accepts(&StateValue::Text("y".into())));
        assert!(!StateKey::Status.accepts(&StateValue::Text("Up".into())));
    }

    #[test]
    fn a_delta_is_everything_newer_oldest_first_and_applies_idempotently() {
        let node = NodeId::from_u128(1);
        let mut state = NodeState::new(Generation(3));
        state.set(StateKey::Zone, StateValue::Text("a".into()));
        state.set(StateKey::Status, StateValue::Status(Status::Joining));
        state.beat();
        state.set(StateKey::Status, StateValue::Status(Status::Up));
        assert_eq!(state.max_version(), Version(4));

        let delta = state.delta_since(node, Version(1));
        assert_eq!(delta.heartbeat, Some(Version(3)));
        assert_eq!(delta.entries.len(), 1, "zone@1 is not newer than 1");
        assert_eq!(delta.max_version(), Version(4));

        let mut copy = NodeState::new(Generation(3));
        let full = state.delta_since(node, Version(0));
        let applied = copy.apply(&full);
        assert!(applied.heartbeat_advanced);
        assert_eq!(applied.changed.len(), 2);
        assert_eq!(copy, state);
        let again = copy.apply(&full);
        assert!(!again.heartbeat_advanced && again.changed.is_empty());
        assert_eq!(copy, state);
    }

    #[test]
    fn truncation_keeps_a_contiguous_prefix() {
        let node = NodeId::from_u128(1);
        let mut state = NodeState::new(Generation(1));
        for i in 0..10 {
            state.set(
                StateKey::Extra(format!("k{i}")),
                StateValue::Text("v".repeat(20)),
            );
        }
        state.beat();
        let full = state.delta_since(node, Version(0));
        let mut cut = full.clone();
        let len = cut.truncate_to(full.encoded_len() / 2).expect("fits");
        assert_eq!(len, cut.encoded_len());
        assert!(len <= full.encoded_len() / 2);
        assert_eq!(cut.heartbeat, None, "the heartbeat is the newest item");
        let versions: Vec<u64> = cut.entries.iter().map(|e| e.version.0).collect();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected);

        let mut tiny = full.clone();
        assert_eq!(tiny.truncate_to(10), None);
        assert_eq!(tiny, full);
    }
}
