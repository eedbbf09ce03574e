//! Admission of client requests: bounds on bucket, key, value and content
//! type, the node's readiness, the limit on requests a client waits for,
//! and the admission queue where requests wait (bounded in count, bytes
//! and time) while background work holds its budget.

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_storage::object::{check_content_type, ContentTypeError};
use chorus_storage::store::{Store, MAX_BUCKET_LEN, MAX_KEY_LEN};

use uuid::Uuid;

use super::requests::RequestId;
use super::shard::{Cx, Shard};
use super::{ClientId, ClientRequest, Now};
use crate::api::{RequestError, WriteRequest};

/// A client request waiting for admission while background work is over
/// its budget.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) client: ClientId,
    pub(super) request: ClientRequest,
    /// When it was queued (monotonic).
    pub(super) since: Duration,
    /// The bytes of its value.
    pub(super) bytes: usize,
}

impl Queued {
    /// When its time runs out: a request waits for admission at most for
    /// its own timeout, and the time it waited counts toward it.
    pub(super) fn deadline(&self) -> Duration {
        self.since + Duration::from_millis(self.request.options().timeout_ms)
    }

    /// The request, admitted at `now`, with the time it waited taken off
    /// its timeout.
    fn into_admitted(mut self, now: Now) -> ClientRequest {
        let left = self.deadline().saturating_sub(now.mono).as_millis();
        let options = self.request.options_mut();
        options.timeout_ms = u64::try_from(left)
            .unwrap_or(u64::MAX)
            .clamp(1, options.timeout_ms);
        self.request
    }
}

impl Shard {
    pub(super) fn admit<S: Store>(
        &self,
        cx: &Cx<'_, S>,
        request: &ClientRequest,
    ) -> Result<(), RequestError> {
        let (bucket, key) = match request {
            ClientRequest::Get(r) => (&r.bucket, &r.key),
            ClientRequest::Put(w) => (&w.bucket, &w.key),
        };
        check_key("bucket", bucket, MAX_BUCKET_LEN)?;
        check_key("key", key, MAX_KEY_LEN)?;
        if let ClientRequest::Put(WriteRequest {
            value: Some(value), ..
        }) = request
        {
            if value.len() > cx.parts.config.max_value_bytes {
                return Err(RequestError::ValueTooLarge {
                    size: value.len(),
                    max: cx.parts.config.max_value_bytes,
                });
            }
        }
        if let ClientRequest::Put(WriteRequest {
            value,
            content_type: Some(content_type),
            ..
        }) = request
        {
            if value.is_none() {
                return Err(ContentTypeError::OnTombstone.into());
            }
            check_content_type(content_type)?;
        }
        if let Some(conflict) = &cx.view.conflict {
            return Err(RequestError::Unavailable(conflict.to_string()));
        }
        if let Some(failure) = cx.parts.storage_failure() {
            return Err(RequestError::Unavailable(format!(
                "the node's store failed: {failure}"
            )));
        }
        if cx.view.ring.is_none() {
            return Err(RequestError::Unavailable(
                "the node holds no ring yet: the cluster is forming".into(),
            ));
        }
        if !cx.view.ring_agreed {
            return Err(RequestError::Unavailable(
                "the members do not agree on the ring yet: a ring change is spreading".into(),
            ));
        }
        let awaited = self.awaited_requests();
        if awaited >= self.budget.max_pending_requests {
            return Err(RequestError::Overloaded(format!(
                "{awaited} client requests in flight, the most this node takes"
            )));
        }
        Ok(())
    }

    /// Requests in flight whose client still waits (background work aside).
    pub(super) fn awaited_requests(&self) -> usize {
        self.requests_in_flight() - self.background.requests
    }

    /// Whether background work holds its whole budget, so new client
    /// requests wait for admission.
    pub(super) fn background_full(&self) -> bool {
        self.background.requests >= self.budget.max_background_requests
            || self.background.bytes >= self.budget.max_background_bytes
    }

    /// When background work holds its whole budget, most of it waits for
    /// one replica and that replica holds at least twice what any other
    /// does, hands the oldest of that work to hinted handoff
    /// until the replica holds at most half the budget: answered puts
    /// retire and hint the replica (and any other target they still wait
    /// for), answered gets retire with the read repairs they can make, and
    /// hint deliveries to it end (their hints stay).
    ///
    /// A replica that stops answering but is not yet convicted by the
    /// failure detector (paused, partitioned one way, its disk stuck) would
    /// otherwise hold one background request per write until its
    /// conviction, seconds later, and every client of this node would wait
    /// that long for admission. Healthy replicas share the waits between
    /// them (a put at `w=quorum` waits for whichever answers last, one at
    /// `w=one` for all of them), so the budget still pushes back on
    /// clients when the whole cluster is merely busy. As Dynamo and Cassandra do, a replica that
    /// does not acknowledge gets the write later, from a hint.
    pub(super) fn shed_background_held_by_one_replica<S: Store>(&mut self, cx: &mut Cx<'_, S>) {
        if !self.background_full() {
            return;
        }
        let mut held: BTreeMap<Uuid, Vec<(RequestId, Held)>> = BTreeMap::new();
        for (request, get) in self.gets.iter().filter(|(_, get)| get.answered()) {
            for node in get.unanswered() {
                held.entry(node).or_default().push((request, Held::Get));
            }
        }
        for (request, put) in self.puts.iter() {
            if put.background_bytes().is_some() {
                for target in put.unanswered() {
                    held.entry(target.node)
                        .or_default()
                        .push((request, Held::Put));
                }
            }
        }
        for (request, target) in self.hints.deliveries() {
            held.entry(target)
                .or_default()
                .push((request, Held::HintDelivery));
        }
        // The replica the most background work waits for (the first such
        // in id order when several tie), and how much the next one holds.
        let mut most: Option<(Uuid, Vec<(RequestId, Held)>)> = None;
        let mut runner_up = 0;
        for (node, waiting) in held {
            match &most {
                Some((_, top)) if waiting.len() <= top.len() => {
                    runner_up = runner_up.max(waiting.len());
                }
                _ => {
                    runner_up = most.as_ref().map_or(0, |(_, top)| top.len());
                    most = Some((node, waiting));
                }
            }
        }
        let Some((node, mut waiting)) = most else {
            return;
        };
        // One replica holds most of the budget, and far more than any
        // other: not a cluster that is merely busy, where the replicas a
        // write still waits for share the waits.
        if waiting.len() * ONE_REPLICA_SHARE.1 <= self.background.requests * ONE_REPLICA_SHARE.0
            || waiting.len() < 2 * runner_up
        {
            return;
        }
        waiting.sort_by_key(|&(request, _)| request);
        let keep = self.budget.max_background_requests / 2;
        let shed = waiting.len().saturating_sub(keep);
        for &(request, kind) in &waiting[..shed] {
            match kind {
                Held::Get => self.retire_get(cx, request),
                Held::Put => self.retire_put(cx, request),
                Held::HintDelivery => self.end_hint_delivery(request),
            }
        }
        self.stats.background_shed += shed as u64;
        tracing::info!(
            %node,
            shed,
            "background work waiting for one replica was handed to hinted handoff"
        );
    }

    /// Queues a client request until background work is back under its
    /// budget (backpressure), or refuses it as overloaded when the
    /// admission queue is full.
    pub(super) fn enqueue<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        request: ClientRequest,
    ) {
        let bytes = match &request {
            ClientRequest::Put(WriteRequest {
                value: Some(value), ..
            }) => value.len(),
            _ => 0,
        };
        if self.admission.len() >= self.budget.max_queued_requests
            || self.queued_bytes + bytes > self.budget.max_queued_bytes
        {
            self.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "{} requests ({} bytes) already wait for admission",
                self.admission.len(),
                self.queued_bytes
            ));
            return cx.reply(client, Err(error));
        }
        self.queued_bytes += bytes;
        self.admission.push_back(Queued {
            client,
            request,
            since: now.mono,
            bytes,
        });
    }

    /// Starts queued client requests, oldest first, while background work
    /// is under its budget.
    pub(super) fn admit_queued<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        if !self.admission.is_empty() {
            self.shed_background_held_by_one_replica(cx);
        }
        while !self.background_full() {
            let Some(queued) = self.admission.pop_front() else {
                break;
            };
            self.queued_bytes -= queued.bytes;
            let client = queued.client;
            let request = queued.into_admitted(now);
            match self.admit(cx, &request) {
                Ok(()) => self.dispatch(cx, now, client, request),
                Err(error) => {
                    if matches!(error, RequestError::Overloaded(_)) {
                        self.stats.refused_overloaded += 1;
                    }
                    cx.reply(client, Err(error));
                }
            }
        }
    }

    /// Refuses queued client requests whose timeout ran out while they
    /// waited for admission: nothing was done for them.
    pub(super) fn expire_queued<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        if !self.admission.iter().any(|q| q.deadline() <= now.mono) {
            return;
        }
        let (expired, waiting): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.admission)
            .into_iter()
            .partition(|q| q.deadline() <= now.mono);
        self.admission = waiting.into();
        for queued in expired {
            self.queued_bytes -= queued.bytes;
            self.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "waited its whole timeout ({} ms) for background work to drain",
                queued.request.options().timeout_ms
            ));
            cx.reply(queued.client, Err(error));
        }
    }
}

/// The share of the background budget past which the work one replica
/// holds is shed, as a fraction (numerator, denominator): three quarters.
/// Healthy replicas each hold about an equal share.
const ONE_REPLICA_SHARE: (usize, usize) = (3, 4);

/// A kind of background work.
#[derive(Debug, Clone, Copy)]
enum Held {
    Get,
    Put,
    HintDelivery,
}

pub(super) fn check_key(what: &'static str, bytes: &[u8], max: usize) -> Result<(), RequestError> {
    if bytes.is_empty() {
        return Err(RequestError::InvalidKey {
            what: what.into(),
            reason: "must not be empty".into(),
        });
    }
    if bytes.len() > max {
        return Err(RequestError::InvalidKey {
            what: what.into(),
            reason: format!("{} bytes, at most {max}", bytes.len()),
        });
    }
    Ok(())
}
