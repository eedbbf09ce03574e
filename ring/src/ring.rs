//! The ring: a versioned placement of every partition on N nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::xxh3_64;

use crate::claim::{claim, Zones};
use crate::hashing::{mix64, node_key};
use crate::member::{Member, MemberChange, NodeId, MAX_MEMBERS, MAX_ZONE_LEN};
use crate::partition::{PartitionId, Partitions};
use crate::preflist::PreferenceList;
use crate::RingError;

/// The largest replica count N a ring accepts.
pub const MAX_REPLICAS: usize = 16;
/// The replica count of a cluster created without one.
pub const DEFAULT_REPLICAS: usize = 3;

/// Salt of the fallback order hash.
const FALLBACK_SALT: u64 = 0x6368_6f72_7573_6662; // "chorus" "fb"
/// First bytes of the canonical encoding, with its format number.
const CANONICAL_MAGIC: &[u8; 8] = b"CHRING\x00\x01";

/// A short hash of a ring's canonical encoding, for cheap comparison.
///
/// Two rings with the same hash are, barring a 64-bit collision, the same
/// ring: same version, shape, members and placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RingHash(pub u64);

impl fmt::Display for RingHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A versioned assignment of each of P partitions to an ordered list of N
/// distinct members, its primaries, plus a fixed fallback order.
///
/// Built by [`Ring::initial`] and changed by [`Ring::next`]; immutable
/// otherwise. See the crate documentation for the guarantees.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    version: u64,
    partitions: Partitions,
    replicas: usize,
    /// Sorted by id; a member's index in this list is its number in `primaries`.
    members: Vec<Member>,
    /// `P × N` member indices: row `p` is partition `p`'s primaries in order.
    primaries: Vec<u16>,
    // Derived from the above when the ring is built.
    zone_limit: usize,
    /// `P × preflist_len` node ids: primaries then fallbacks of each partition.
    preflists: Vec<NodeId>,
    preflist_len: usize,
    hash: RingHash,
}

impl Ring {
    /// The first ring of a cluster: version 1, `partitions` partitions (P) with
    /// `replicas` replicas (N) each, placed on `members` in any order.
    pub fn initial(
        members: &[Member],
        partitions: u32,
        replicas: usize,
    ) -> Result<Self, RingError> {
        let partitions = Partitions::new(partitions)?;
        check_replicas(replicas)?;
        let members = validate_members(members.to_vec(), replicas)?;
        let primaries = claim(&members, partitions.count() as usize, replicas, None);
        Ok(Self::assemble(1, partitions, replicas, members, primaries))
    }

    /// The ring after a batch of member changes, moving as few replicas as it
    /// can. The order of the changes does not matter; a node may appear in at
    /// most one change of a batch. No change returns this ring unchanged.
    pub fn next(&self, changes: &[MemberChange]) -> Result<Self, RingError> {
        if changes.is_empty() {
            return Ok(self.clone());
        }
        let mut changes: Vec<&MemberChange> = changes.iter().collect();
        changes.sort_by_key(|c| c.node());
        if let Some(pair) = changes.windows(2).find(|w| w[0].node() == w[1].node()) {
            return Err(RingError::ConflictingChanges(pair[0].node()));
        }
        let mut members: BTreeMap<NodeId, Member> =
            self.members.iter().map(|m| (m.id, m.clone())).collect();
        for change in changes {
            match change {
                MemberChange::Join(member) => {
                    if members.insert(member.id, member.clone()).is_some() {
                        return Err(RingError::DuplicateMember(member.id));
                    }
                }
                MemberChange::Leave(node) => {
                    members
                        .remove(node)
                        .ok_or(RingError::UnknownMember(*node))?;
                }
                MemberChange::SetWeight { node, weight } => {
                    members
                        .get_mut(node)
                        .ok_or(RingError::UnknownMember(*node))?
                        .weight = *weight;
                }
                MemberChange::SetZone { node, zone } => {
                    members
                        .get_mut(node)
                        .ok_or(RingError::UnknownMember(*node))?
                        .zone = zone.clone();
                }
            }
        }
        self.rebalance(&members.into_values().collect::<Vec<_>>())
    }

    /// The ring for a new member set (in any order), moving as few replicas as
    /// it can from this one. The same member set returns this ring unchanged.
    pub fn rebalance(&self, members: &[Member]) -> Result<Self, RingError> {
        let members = validate_members(members.to_vec(), self.replicas)?;
        if members == self.members {
            return Ok(self.clone());
        }
        let primaries = claim(
            &members,
            self.partitions.count() as usize,
            self.replicas,
            Some((&self.members, &self.primaries)),
        );
        Ok(Self::assemble(
            self.version + 1,
            self.partitions,
            self.replicas,
            members,
            primaries,
        ))
    }

    /// This ring's placement under a newer `version`: how a cluster goes
    /// back to an earlier placement after a change it could not make (a
    /// member refused the change because it would have moved data away
    /// that no handoff carries yet). Rings compare by version, so the
    /// reissued ring supersedes the one it replaces.
    ///
    /// # Panics
    ///
    /// If `version` is not above this ring's: that is a programmer error.
    pub fn reissue(&self, version: u64) -> Self {
        assert!(
            version > self.version,
            "a reissued ring must be newer ({version} <= {})",
            self.version
        );
        Self::assemble(
            version,
            self.partitions,
            self.replicas,
            self.members.clone(),
            self.primaries.clone(),
        )
    }

    /// Builds the lookup tables and the hash of a placement.
    fn assemble(
        version: u64,
        partitions: Partitions,
        replicas: usize,
        members: Vec<Member>,
        primaries: Vec<u16>,
    ) -> Self {
        let zones = Zones::new(&members, replicas);
        let (preflists, preflist_len) =
            build_preflists(&members, &zones, partitions, replicas, &primaries);
        let mut ring = Self {
            version,
            partitions,
            replicas,
            members,
            primaries,
            zone_limit: zones.limit,
            preflists,
            preflist_len,
            hash: RingHash(0),
        };
        ring.hash = RingHash(xxh3_64(&ring.canonical_bytes()));
        ring
    }

    /// The version: 1 for an initial ring, one more at every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The hash of the canonical encoding.
    pub fn hash(&self) -> RingHash {
        self.hash
    }

    /// The split of the hash space.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// N, the number of primaries of every partition.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// A member by id.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.index_of(id).map(|i| &self.members[i])
    }

    /// The most replicas of one partition in one zone: 1 when there are at
    /// least N zones.
    pub fn zone_limit(&self) -> usize {
        self.zone_limit
    }

    /// How many fallbacks each preference list has: `min(members − N, 2N)`.
    pub fn fallback_count(&self) -> usize {
        self.preflist_len - self.replicas
    }

    /// The partition of a key.
    #[inline]
    pub fn partition_of(&self, bucket: &[u8], key: &[u8]) -> PartitionId {
        self.partitions.of_key(bucket, key)
    }

    /// A partition's N primaries, in order.
    ///
    /// # Panics
    /// If the partition is not below P (a programmer error).
    #[inline]
    pub fn primaries(&self, partition: PartitionId) -> &[NodeId] {
        self.preference_list(partition).primaries()
    }

    /// A partition's preference list: its primaries, then its fallbacks.
    ///
    /// # Panics
    /// If the partition is not below P (a programmer error).
    #[inline]
    pub fn preference_list(&self, partition: PartitionId) -> PreferenceList<'_> {
        assert!(
            partition.0 < self.partitions.count(),
            "{partition} is outside a ring of {} partitions",
            self.partitions.count()
        );
        let start = partition.index() * self.preflist_len;
        PreferenceList::new(
            partition,
            &self.preflists[start..start + self.preflist_len],
            self.replicas,
        )
    }

    /// The preference list of a key: a hash, a shift and a slice; no allocation.
    #[inline]
    pub fn preference_list_for_key(&self, bucket: &[u8], key: &[u8]) -> PreferenceList<'_> {
        self.preference_list(self.partition_of(bucket, key))
    }

    /// How many partitions each member is a primary of, in member order.
    pub fn loads(&self) -> Vec<usize> {
        let mut loads = vec![0; self.members.len()];
        for &i in &self.primaries {
            loads[i as usize] += 1;
        }
        loads
    }

    /// How many partitions a node is a primary of; `None` for a non-member.
    pub fn load(&self, node: NodeId) -> Option<usize> {
        let i = self.index_of(node)? as u16;
        Some(self.primaries.iter().filter(|&&x| x == i).count())
    }

    /// The partitions a node is a primary of, in order.
    pub fn partitions_of(&self, node: NodeId) -> impl Iterator<Item = PartitionId> + '_ {
        let index = self.index_of(node).map(|i| i as u16);
        self.primaries
            .chunks_exact(self.replicas)
            .enumerate()
            .filter(move |(_, row)| index.is_some_and(|i| row.contains(&i)))
            .map(|(p, _)| PartitionId(p as u32))
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(&id)).ok()
    }

    /// The canonical encoding the [hash](Ring::hash) is computed from.
    ///
    /// All integers little-endian:
    ///
    /// ```text
    /// "CHRING" 0x00 0x01                     magic and format 1
    /// version: u64, P: u32, N: u32, member count: u32
    /// per member, in id order:
    ///     id: 16 bytes, weight: u32, zone length: u32, zone: UTF-8 bytes
    /// per partition in order, per primary in order:
    ///     member number (index in id order): u16
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.members.len() * 32 + self.primaries.len() * 2);
        out.extend_from_slice(CANONICAL_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.partitions.count().to_le_bytes());
        out.extend_from_slice(&(self.replicas as u32).to_le_bytes());
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            out.extend_from_slice(m.id.as_bytes());
            out.extend_from_slice(&m.weight.to_le_bytes());
            out.extend_from_slice(&(m.zone.len() as u32).to_le_bytes());
            out.extend_from_slice(m.zone.as_bytes());
        }
        for &i in &self.primaries {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out
    }
}

fn check_replicas(replicas: usize) -> Result<(), RingError> {
    if (1..=MAX_REPLICAS).contains(&replicas) {
        Ok(())
    } else {
        Err(RingError::BadReplicaCount(replicas))
    }
}

/// Sorts members by id and checks them; errors name the first bad member in
/// id order, so they do not depend on the input order.
fn validate_members(mut members: Vec<Member>, replicas: usize) -> Result<Vec<Member>, RingError> {
    members.sort_by_key(|m| m.id);
    if let Some(pair) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RingError::DuplicateMember(pair[0].id));
    }
    for m in &members {
        if m.weight == 0 {
            return Err(RingError::ZeroWeight(m.id));
        }
        if m.zone.len() > MAX_ZONE_LEN {
            return Err(RingError::ZoneTooLong {
                node: m.id,
                len: m.zone.len(),
            });
        }
    }
    if members.len() > MAX_MEMBERS {
        return Err(RingError::TooManyMembers(members.len()));
    }
    if members.len() < replicas {
        return Err(RingError::TooFewMembers {
            members: members.len(),
            replicas,
        });
    }
    Ok(members)
}

/// The preference list of every partition: its primaries, then
/// `min(members − N, 2N)` fallbacks.
///
/// Fallbacks are chosen one at a time: the member not yet in the list whose
/// zone appears least often in the list so far, ties broken by a per-partition
/// hash of the node id (rendezvous hashing), then by id. With one zone this is
/// plain rendezvous order, which spreads a down node's partitions evenly over
/// the other nodes; with several zones the list visits the zones in turn.
fn build_preflists(
    members: &[Member],
    zones: &Zones,
    partitions: Partitions,
    replicas: usize,
    primaries: &[u16],
) -> (Vec<NodeId>, usize) {
    let n = members.len();
    let fallbacks = (n - replicas).min(2 * replicas);
    let len = replicas + fallbacks;
    let keys: Vec<u64> = members
        .iter()
        .map(|m| node_key(&m.id) ^ FALLBACK_SALT)
        .collect();
    let mut out = Vec::with_capacity(partitions.count() as usize * len);
    let mut zone_used = vec![0u32; zones.members.len()];
    // Per zone, its best `fallbacks` candidates by (score, index), ascending.
    let mut best: Vec<Vec<(u64, u16)>> = vec![Vec::with_capacity(fallbacks); zones.members.len()];
    let mut heap = BinaryHeap::new();
    for (p, row) in primaries.chunks_exact(replicas).enumerate() {
        out.extend(row.iter().map(|&i| members[i as usize].id));
        if fallbacks == 0 {
            continue;
        }
        zone_used.fill(0);
        for &i in row {
            zone_used[zones.of[i as usize] as usize] += 1;
        }
        best.iter_mut().for_each(Vec::clear);
        let salt = mix64(p as u64 ^ FALLBACK_SALT);
        for (i, (key, &zone)) in keys.iter().zip(&zones.of).enumerate() {
            let candidate = (mix64(key ^ salt), i as u16);
            let list = &mut best[zone as usize];
            if list.len() == fallbacks && candidate >= list[fallbacks - 1] {
                continue;
            }
            if row.contains(&candidate.1) {
                continue;
            }
            if list.len() == fallbacks {
                list.pop();
            }
            let at = list.partition_point(|&c| c < candidate);
            list.insert(at, candidate);
        }
        // Merge the zones: the next fallback comes from the zone used least
        // so far, ties by score.
        heap.clear();
        for (z, list) in best.iter().enumerate() {
            if let Some(&(score, i)) = list.first() {
                heap.push(Reverse((zone_used[z], score, i, z, 0usize)));
            }
        }
        for _ in 0..fallbacks {
            let Reverse((_, _, i, z, at)) = heap.pop().expect("fewer fallbacks than non-primaries");
            out.push(members[i as usize].id);
            zone_used[z] += 1;
            if let Some(&(score, next)) = best[z].get(at + 1) {
                heap.push(Reverse((zone_used[z], score, next, z, at + 1)));
            }
        }
    }
    (out, len)
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("version", &self.version)
            .field("hash", &self.hash)
            .field("partitions", &self.partitions.count())
            .field("replicas", &self.replicas)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// An operator's summary: one line per member with its share of the ring.
impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ring v{} {}: {} partitions × {} replicas on {} members",
            self.version,
            self.hash,
            self.partitions.count(),
            self.replicas,
            self.members.len()
        )?;
        let loads = self.loads();
        let total = self.primaries.len() as f64;
        for (m, load) in self.members.iter().zip(loads) {
            writeln!(
                f,
                "  {}  zone {:<12} weight {:>6}  {:>6} replicas ({:5.2}%)",
                m.id,
                format!("{:?}", m.zone),
                m.weight,
                load,
                100.0 * load as f64 / total
            )?;
        }
        Ok(())
    }
}

/// The serialised form: the canonical fields only; the lookup tables are
/// rebuilt, and every invariant checked, when a ring is decoded.
#[derive(Serialize)]
struct RingRef<'a> {
    version: u64,
    partitions: u32,
    replicas: u32,
    members: &'a [Member],
    primaries: &'a [u16],
}

#[derive(Deserialize)]
struct RingRepr {
    version: u64,
    partitions: u32,
    replicas: u32,
    members: Vec<Member>,
    primaries: Vec<u16>,
}

impl Serialize for Ring {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RingRef {
            version: self.version,
            partitions: self.partitions.count(),
            replicas: self.replicas as u32,
            members: &self.members,
            primaries: &self.primaries,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = RingRepr::deserialize(deserializer)?;
        Ring::try_from_parts(repr).map_err(serde::de::Error::custom)
    }
}

impl Ring {
    fn try_from_parts(repr: RingRepr) -> Result<Self, RingError> {
        let invalid = |what: &str| RingError::InvalidEncoding(what.to_owned());
        let partitions = Partitions::new(repr.partitions)?;
        let replicas = repr.replicas as usize;
        check_replicas(replicas)?;
        if !repr.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err(invalid("members are not in strictly increasing id order"));
        }
        let members = validate_members(repr.members, replicas)?;
        if repr.primaries.len() != partitions.count() as usize * replicas {
            return Err(invalid("primary table does not have P × N entries"));
        }
        let zones = Zones::new(&members, replicas);
        if repr.primaries.iter().any(|&i| i as usize >= members.len()) {
            return Err(invalid("primary names no member"));
        }
        for row in repr.primaries.chunks_exact(replicas) {
            for (s, &i) in row.iter().enumerate() {
                if row[..s].contains(&i) {
                    return Err(invalid("partition has the same primary twice"));
                }
                let zone = zones.of[i as usize];
                if row
                    .iter()
                    .filter(|&&x| zones.of[x as usize] == zone)
                    .count()
                    > zones.limit
                {
                    return Err(invalid(
                        "partition has more primaries in one zone than the zone limit",
                    ));
                }
            }
        }
        Ok(Self::assemble(
            repr.version,
            partitions,
            replicas,
            members,
            repr.primaries,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn node(i: u128) -> NodeId {
        Uuid::from_u128(0x1000 + i)
    }

    fn members(n: u128) -> Vec<Member> {
        (0..n).map(|i| Member::new(node(i), "", 1)).collect()
    }

    #[test]
    fn initial_rejects_bad_input() {
        let m = members(3);
        assert_eq!(
            Ring::initial(&m, 100, 3).unwrap_err(),
            RingError::BadPartitionCount(100)
        );
        assert_eq!(
            Ring::initial(&m, 4, 3).unwrap_err(),
            RingError::BadPartitionCount(4)
        );
        assert_eq!(
            Ring::initial(&m, 256, 0).unwrap_err(),
            RingError::BadReplicaCount(0)
        );
        assert_eq!(
            Ring::initial(&m, 256, 17).unwrap_err(),
            RingError::BadReplicaCount(17)
        );
        assert_eq!(
            Ring::initial(&m, 256, 4).unwrap_err(),
            RingError::TooFewMembers {
                members: 3,
                replicas: 4
            }
        );
        let mut dup = m.clone();
        dup.push(dup[1].clone());
        assert_eq!(
            Ring::initial(&dup, 256, 3).unwrap_err(),
            RingError::DuplicateMember(node(1))
        );
        let mut zero = m.clone();
        zero[2].weight = 0;
        assert_eq!(
            Ring::initial(&zero, 256, 3).unwrap_err(),
            RingError::ZeroWeight(node(2))
        );
        let mut long = m.clone();
        long[0].zone = "z".repeat(256);
        assert_eq!(
            Ring::initial(&long, 256, 3).unwrap_err(),
            RingError::ZoneTooLong {
                node: node(0),
                len: 256
            }
        );
    }

    #[test]
    fn member_count_is_bounded() {
        let many: Vec<Member> = (0..=MAX_MEMBERS as u128)
            .map(|i| Member::new(node(i), "", 1))
            .collect();
        assert_eq!(
            Ring::initial(&many, 8, 3).unwrap_err(),
            RingError::TooManyMembers(MAX_MEMBERS + 1)
        );
    }

    #[test]
    fn next_rejects_bad_changes_and_leaves_the_ring_alone() {
        let ring = Ring::initial(&members(4), 64, 3).unwrap();
        let before = ring.clone();
        let stranger = node(99);
        assert_eq!(
            ring.next(&[MemberChange::Leave(stranger)]).unwrap_err(),
            RingError::UnknownMember(stranger)
        );
        assert_eq!(
            ring.next(&[MemberChange::SetWeight {
                node: stranger,
                weight: 2
            }])
            .unwrap_err(),
            RingError::UnknownMember(stranger)
        );
        assert_eq!(
            ring.next(&[MemberChange::SetZone {
                node: stranger,
                zone: "a".into()
            }])
            .unwrap_err(),
            RingError::UnknownMember(stranger)
        );
        assert_eq!(
            ring.next(&[MemberChange::Join(Member::new(node(0), "", 1))])
                .unwrap_err(),
            RingError::DuplicateMember(node(0))
        );
        assert_eq!(
            ring.next(&[MemberChange::SetWeight {
                node: node(1),
                weight: 0
            }])
            .unwrap_err(),
            RingError::ZeroWeight(node(1))
        );
        assert_eq!(
            ring.next(&[MemberChange::Leave(node(1)), MemberChange::Leave(node(2))])
                .unwrap_err(),
            RingError::TooFewMembers {
                members: 2,
                replicas: 3
            }
        );
        assert_eq!(
            ring.next(&[
                MemberChange::Leave(node(1)),
                MemberChange::SetWeight {
                    node: node(1),
                    weight: 3
                }
            ])
            .unwrap_err(),
            RingError::ConflictingChanges(node(1))
        );
        assert_eq!(ring, before);
    }

    #[test]
    fn a_reissued_ring_keeps_the_placement_under_a_newer_version() {
        let ring = Ring::initial(&members(4), 16, 3).expect("valid");
        let again = ring.reissue(7);
        assert_eq!(again.version(), 7);
        assert_ne!(again.hash(), ring.hash());
        for p in ring.partitions().iter() {
            assert_eq!(again.primaries(p), ring.primaries(p));
        }
    }

    #[test]
    fn versions_count_changes_and_no_op_changes_keep_the_ring() {
        let ring = Ring::initial(&members(4), 64, 3).unwrap();
        assert_eq!(ring.version(), 1);
        assert_eq!(ring.next(&[]).unwrap(), ring);
        let same_weight = ring
            .next(&[MemberChange::SetWeight {
                node: node(0),
                weight: 1,
            }])
            .unwrap();
        assert_eq!(same_weight, ring);
        let joined = ring
            .next(&[MemberChange::Join(Member::new(node(9), "", 1))])
            .unwrap();
        assert_eq!(joined.version(), 2);
        assert_ne!(joined.hash(), ring.hash());
    }

    #[test]
    fn serde_round_trip_keeps_the_ring_and_its_hash() {
        let mut m = members(6);
        for (i, member) in m.iter_mut().enumerate() {
            member.zone = format!("zone-{}", i % 3);
            member.weight = 1 + i as u32;
        }
        let ring = Ring::initial(&m, 128, 3).unwrap();
        let bytes = rmp_serde::to_vec_named(&ring).unwrap();
        let back: Ring = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, ring);
        assert_eq!(back.hash(), ring.hash());
    }

    #[test]
    fn decoding_rejects_broken_rings() {
        let ring = Ring::initial(&members(4), 8, 3).unwrap();
        let good = RingRepr {
            version: ring.version,
            partitions: 8,
            replicas: 3,
            members: ring.members.clone(),
            primaries: ring.primaries.clone(),
        };
        let mut twice = good.primaries.clone();
        twice[1] = twice[0];
        let mut unknown = good.primaries.clone();
        unknown[5] = 4;
        let mut unsorted = good.members.clone();
        unsorted.swap(0, 1);
        let cases = [
            RingRepr {
                primaries: twice,
                ..clone_repr(&good)
            },
            RingRepr {
                primaries: unknown,
                ..clone_repr(&good)
            },
            RingRepr {
                primaries: good.primaries[..23].to_vec(),
                ..clone_repr(&good)
            },
            RingRepr {
                members: unsorted,
                ..clone_repr(&good)
            },
            RingRepr {
                partitions: 12,
                ..clone_repr(&good)
            },
            RingRepr {
                replicas: 0,
                ..clone_repr(&good)
            },
        ];
        for case in cases {
            assert!(Ring::try_from_parts(case).is_err());
        }
        assert_eq!(Ring::try_from_parts(good).unwrap(), ring);

        // Zone rule: with 3 zones and N = 3, two primaries may not share a zone.
        let mut zoned = members(4);
        for (i, m) in zoned.iter_mut().enumerate() {
            m.zone = ["a", "b", "c", "a"][i].into();
        }
        let ring = Ring::initial(&zoned, 8, 3).unwrap();
        let mut primaries = ring.primaries.clone();
        // Put node 0 and node 3 (both zone "a") in partition 0.
        primaries[..3].copy_from_slice(&[0, 3, 1]);
        let bad = RingRepr {
            version: 1,
            partitions: 8,
            replicas: 3,
            members: ring.members.clone(),
            primaries,
        };
        assert!(matches!(
            Ring::try_from_parts(bad),
            Err(RingError::InvalidEncoding(_))
        ));
    }

    fn clone_repr(r: &RingRepr) -> RingRepr {
        RingRepr {
            version: r.version,
            partitions: r.partitions,
            replicas: r.replicas,
            members: r.members.clone(),
            primaries: r.primaries.clone(),
        }
    }

    #[test]
    fn hash_is_pinned_for_a_fixed_ring() {
        // The canonical encoding and the claim are deterministic on every
        // platform; this value changes only if one of them is changed on purpose.
        let mut m = members(5);
        for (i, member) in m.iter_mut().enumerate() {
            member.zone = format!("z{}", i % 3);
        }
        let ring = Ring::initial(&m, 16, 3).unwrap();
        assert_eq!(ring.hash().to_string(), "f4fc6d75dfb76730");
        assert_eq!(ring.hash(), RingHash(xxh3_64(&ring.canonical_bytes())));
    }

    #[test]
    fn canonical_bytes_follow_the_documented_layout() {
        let ring = Ring::initial(&members(3), 8, 3).unwrap();
        let bytes = ring.canonical_bytes();
        assert_eq!(&bytes[..8], CANONICAL_MAGIC);
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 8);
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 3);
        assert_eq!(&bytes[28..44], node(0).as_bytes());
        // 3 members × (16 + 4 + 4 + 0) bytes, then 8 × 3 primaries of 2 bytes.
        assert_eq!(bytes.len(), 28 + 3 * 24 + 8 * 3 * 2);
    }

    #[test]
    fn loads_and_partitions_of_agree() {
        let ring = Ring::initial(&members(5), 64, 3).unwrap();
        let loads = ring.loads();
        assert_eq!(loads.iter().sum::<usize>(), 64 * 3);
        for (m, &load) in ring.members().iter().zip(&loads) {
            assert_eq!(ring.load(m.id), Some(load));
            assert_eq!(ring.partitions_of(m.id).count(), load);
            for p in ring.partitions_of(m.id) {
                assert!(ring.primaries(p).contains(&m.id));
            }
        }
        assert_eq!(ring.load(node(77)), None);
        assert_eq!(ring.partitions_of(node(77)).count(), 0);
    }

    #[test]
    fn weights_set_shares() {
        let mut m = members(6);
        m[0].weight = 2; // 2 / 7 of 64 × 3 = 54.86 replicas, the others 27.43
        let ring = Ring::initial(&m, 64, 3).unwrap();
        let loads = ring.loads();
        assert!(loads[0] == 54 || loads[0] == 55, "{loads:?}");
        for &l in &loads[1..] {
            assert!(l == 27 || l == 28, "{loads:?}");
        }
    }

    #[test]
    fn a_node_never_holds_more_than_every_partition() {
        let mut m = members(4);
        m[0].weight = 1000;
        let ring = Ring::initial(&m, 64, 3).unwrap();
        let loads = ring.loads();
        assert_eq!(loads[0], 64, "capped at one replica per partition");
        assert_eq!(loads[1..].iter().sum::<usize>(), 128);
        assert!(
            loads[1..].iter().all(|&l| (42..=43).contains(&l)),
            "{loads:?}"
        );
    }

    #[test]
    fn a_zone_never_holds_more_than_one_replica_per_partition_with_n_zones() {
        // Zone "a" has most of the weight but can hold only one replica of each partition.
        let mut m = members(6);
        for (i, member) in m.iter_mut().enumerate() {
            member.zone = ["a", "a", "a", "a", "b", "c"][i].into();
        }
        let ring = Ring::initial(&m, 64, 3).unwrap();
        let loads = ring.loads();
        assert_eq!(loads[..4].iter().sum::<usize>(), 64);
        assert_eq!(loads[4], 64);
        assert_eq!(loads[5], 64);
        assert!(loads[..4].iter().all(|&l| l == 16), "{loads:?}");
    }

    #[test]
    fn display_lists_every_member() {
        let ring = Ring::initial(&members(3), 8, 3).unwrap();
        let text = ring.to_string();
        assert!(text.starts_with(&format!(
            "ring v1 {}: 8 partitions × 3 replicas on 3 members",
            ring.hash()
        )));
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("8 replicas"));
    }
}
