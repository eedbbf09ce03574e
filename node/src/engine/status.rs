//! What a node reports about the cluster: membership, the ring it holds and
//! a key's preference list, as plain data for the APIs. Read from
//! [`Membership`] alone; the engine's public status methods hand these on.

use std::net::SocketAddr;

use chorus_gossip::{Liveness, StateKey, StateValue, Status};
use chorus_ring::Ring;
use chorus_storage::store::Store;
use uuid::Uuid;

use super::membership::{Membership, NAME_EXTRA};
use crate::api::{
    ClusterStatus, MemberStatus, NodeRef, PreflistEntry, PreflistStatus, RingMember, RingPartition,
    RingStatus,
};

impl<S: Store> Membership<S> {
    /// The membership as this node sees it.
    pub(super) fn cluster_status(&self) -> ClusterStatus {
        let mut members = Vec::new();
        for member in self.gossip.members() {
            let state = member.state;
            let local = member.id == self.id;
            let liveness = if local {
                "up"
            } else {
                match member.liveness {
                    Liveness::Up => "up",
                    Liveness::Down => "down",
                    Liveness::Unknown => "unknown",
                }
            };
            let status = if member.left {
                Status::Left
            } else {
                state.status().unwrap_or(Status::Joining)
            };
            let name = match state.get(&StateKey::Extra(NAME_EXTRA.into())) {
                Some(versioned) => match &versioned.value {
                    StateValue::Text(name) => name.clone(),
                    _ => String::new(),
                },
                None => String::new(),
            };
            members.push(MemberStatus {
                id: member.id,
                name,
                quic_addr: state.quic_addr(),
                http_addr: state.http_addr(),
                status: status_name(status).to_string(),
                zone: state.zone().map(str::to_string),
                generation: state.generation().0,
                heartbeat: state.heartbeat().0,
                liveness: liveness.to_string(),
                local,
            });
        }
        if !members.iter().any(|m| m.local) {
            let state = self.gossip.local_state();
            members.push(MemberStatus {
                id: self.id,
                name: self.parts.config.name.clone(),
                quic_addr: state.quic_addr(),
                http_addr: state.http_addr(),
                status: status_name(state.status().unwrap_or(Status::Joining)).to_string(),
                zone: state.zone().map(str::to_string),
                generation: self.generation,
                heartbeat: state.heartbeat().0,
                liveness: "up".to_string(),
                local: true,
            });
            members.sort_by_key(|m| m.id);
        }
        ClusterStatus {
            node_id: self.id,
            node_name: self.parts.config.name.clone(),
            ring_version: self.ring.as_deref().map(Ring::version),
            ring_hash: self.ring.as_deref().map(|r| format!("{:016x}", r.hash().0)),
            members,
        }
    }

    /// The ring this node holds, with each member's share and each
    /// partition's range and owner; `None` before it holds a ring.
    pub(super) fn ring_status(&self) -> Option<RingStatus> {
        let ring = self.ring.as_deref()?;
        let split = ring.partitions();
        let count = split.count();
        let members = ring.members();
        let position = |id: Uuid| {
            members
                .binary_search_by(|m| m.id.cmp(&id))
                .expect("a ring's primaries are its members")
        };
        let names: Vec<String> = members.iter().map(|m| self.published(m.id).0).collect();
        let mut owned = vec![0usize; members.len()];
        let partitions = split
            .iter()
            .map(|partition| {
                let primaries = ring.primaries(partition);
                let owner = position(primaries[0]);
                owned[owner] += 1;
                let range = split.hash_range(partition);
                RingPartition {
                    index: partition.0,
                    start: format!("{:016x}", range.start()),
                    end: format!("{:016x}", range.end()),
                    owner: NodeRef {
                        id: members[owner].id,
                        name: names[owner].clone(),
                    },
                    primaries: primaries.to_vec(),
                }
            })
            .collect();
        let percent = |n: usize| 100.0 * n as f64 / f64::from(count);
        let members = members
            .iter()
            .zip(ring.loads())
            .zip(names)
            .zip(owned)
            .map(|(((member, load), name), owned)| RingMember {
                id: member.id,
                name,
                zone: member.zone.clone(),
                weight: member.weight,
                owned_partitions: owned,
                owns_percent: percent(owned),
                primary_partitions: load,
                effective_percent: percent(load),
            })
            .collect();
        Some(RingStatus {
            version: ring.version(),
            hash: format!("{:016x}", ring.hash().0),
            replicas: ring.replicas(),
            partition_count: count,
            members,
            partitions,
        })
    }

    /// Where a key's copies go now, as a coordinator on this node would
    /// place them ([`place`](crate::core::place)): its N primaries, up or down in this node's
    /// opinion, and, when `sloppy`, the fallbacks standing in for the down
    /// ones. `None` before this node holds a ring.
    pub(super) fn preflist_status(
        &self,
        bucket: &[u8],
        key: &[u8],
        sloppy: bool,
    ) -> Option<PreflistStatus> {
        let ring = self.ring.as_deref()?;
        let list = ring.preference_list_for_key(bucket, key);
        let targets = self.view.targets(list, sloppy);
        let entry = |id: Uuid, stands_in_for: Option<Uuid>| {
            let (name, quic_addr, http_addr) = self.published(id);
            PreflistEntry {
                id,
                name,
                quic_addr,
                http_addr,
                up: self.is_up(id),
                stands_in_for,
            }
        };
        Some(PreflistStatus {
            bucket: String::from_utf8_lossy(bucket).into_owned(),
            key: String::from_utf8_lossy(key).into_owned(),
            hash: format!("{:016x}", chorus_ring::key_hash(bucket, key)),
            partition: list.partition().0,
            ring_version: ring.version(),
            sloppy,
            primaries: list.primaries().iter().map(|&id| entry(id, None)).collect(),
            fallbacks: targets
                .iter()
                .filter_map(|target| {
                    target
                        .stands_in_for()
                        .map(|primary| entry(target.node, Some(primary)))
                })
                .collect(),
        })
    }

    /// A node's name and addresses as published in gossip (this node's
    /// from its own configuration and state); empty for a node gossip does
    /// not know.
    pub(super) fn published(&self, id: Uuid) -> (String, Option<SocketAddr>, Option<SocketAddr>) {
        if id == self.id {
            let state = self.gossip.local_state();
            return (
                self.parts.config.name.clone(),
                state.quic_addr(),
                state.http_addr(),
            );
        }
        let Some(member) = self.gossip.member(&id) else {
            return (String::new(), None, None);
        };
        let name = match member.state.get(&StateKey::Extra(NAME_EXTRA.into())) {
            Some(versioned) => match &versioned.value {
                StateValue::Text(name) => name.clone(),
                _ => String::new(),
            },
            None => String::new(),
        };
        (name, member.state.quic_addr(), member.state.http_addr())
    }
}

/// How a member's status is shown: `joining`, `up`, `leaving` or `left`.
pub(super) fn status_name(status: Status) -> &'static str {
    match status {
        Status::Joining => "joining",
        Status::Up => "up",
        Status::Leaving => "leaving",
        Status::Left => "left",
    }
}
