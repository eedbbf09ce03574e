//! Writes forwarded to a replica: on the coordinating side, the checks a
//! forwarded write passes before it is coordinated (applied once however
//! often its frame arrives); on the forwarding side, turning the
//! coordinator's answer back into the client's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_storage::context::CausalContext;
use chorus_storage::object::check_content_type;
use chorus_storage::store::{Store, MAX_BUCKET_LEN, MAX_KEY_LEN};
use uuid::Uuid;

use super::io::{check_key, ClientId, ClientReply, Now};
use super::parts::Cx;
use super::requests::{
    shard_of_request, Ledger, Origin, PlacedWrite, RequestId, Requests, ToForward,
};
use super::view::uncovered_primaries;
use crate::api::{RequestError, WriteReply};
use crate::core::{PutError, QuorumTally, ResolvedOptions};
use crate::wire::{decode_object, ForwardedReply, ForwardedWrite, Message, WireKey};

/// Extra time a forwarding node waits beyond the request's timeout for the
/// coordinating replica's answer.
pub(super) const FORWARD_GRACE: Duration = Duration::from_secs(1);

/// Most forwarded request ids remembered per sender, to refuse a second
/// delivery of one forwarded write.
pub(super) const MAX_FORWARDS_REMEMBERED: usize = 1024;

/// Most senders whose forwarded request ids are remembered.
pub(super) const MAX_FORWARD_SENDERS: usize = 4096;

/// The forwarded writes one shard of a sender asked this node to
/// coordinate, in the sender's newest generation seen: every id at or below
/// `floor`, and those in `ids`. One shard's request ids grow within an
/// incarnation, so forgetting the smallest id raises the floor instead of
/// letting it be applied again; a newer generation starts afresh (frames
/// of older ones are dropped before they get here).
#[derive(Debug, Default)]
pub(super) struct SeenForwards {
    pub(super) generation: u64,
    pub(super) floor: u64,
    pub(super) ids: BTreeSet<u64>,
}

impl SeenForwards {
    /// Records `request` from the sender's incarnation `generation`; false
    /// if it was seen (or is below what was forgotten, or comes from an
    /// older incarnation).
    pub(super) fn first_time(&mut self, generation: u64, request: RequestId) -> bool {
        if generation > self.generation {
            *self = SeenForwards {
                generation,
                ..SeenForwards::default()
            };
        }
        if generation < self.generation || request <= self.floor || !self.ids.insert(request) {
            return false;
        }
        while self.ids.len() > MAX_FORWARDS_REMEMBERED {
            let forgotten = self.ids.pop_first().expect("not empty");
            self.floor = self.floor.max(forgotten);
        }
        true
    }
}

/// A write this node forwarded to the replica that coordinates it.
#[derive(Debug)]
pub(super) struct ForwardedRequest {
    client: ClientId,
    to: Uuid,
    bucket: Vec<u8>,
    key: Vec<u8>,
    w: usize,
    pw: usize,
}

impl ForwardedRequest {
    /// Whether an answer from `from` naming `bucket` and `key` is this
    /// write's.
    pub(super) fn answered_by(&self, from: Uuid, bucket: &[u8], key: &[u8]) -> bool {
        self.to == from && self.bucket == bucket && self.key == key
    }

    /// The client's answer to a coordinator's answer.
    pub(super) fn on_reply(
        self,
        result: Result<ForwardedReply, RequestError>,
    ) -> (ClientId, Result<ClientReply, RequestError>) {
        let result = result.and_then(|reply| decode_forwarded(reply).map(ClientReply::Write));
        (self.client, result)
    }

    /// The client's answer when the coordinator's answer never comes (its
    /// time ran out, or the coordinator restarted): the coordinating
    /// replica may have applied the write.
    pub(super) fn on_timeout(self) -> (ClientId, RequestError) {
        let tally = QuorumTally {
            required: self.w,
            required_primaries: self.pw,
            received: 0,
            received_primaries: 0,
            failures: vec![],
        };
        let error = RequestError::Put(PutError::Indeterminate { tally, applied: 0 });
        (self.client, error)
    }

    /// The client's answer when the write could not be sent: nothing was
    /// applied.
    pub(super) fn on_send_failed(self) -> (ClientId, RequestError) {
        let error = RequestError::Unavailable(format!(
            "the write could not be sent to replica {}, which coordinates it; nothing was applied",
            self.to
        ));
        (self.client, error)
    }
}

/// The writes one shard forwarded and waits for, and the forwarded writes
/// it was asked to coordinate (per sender and the sender's shard), so a
/// frame delivered twice is applied once.
#[derive(Debug, Default)]
pub(super) struct Forwards {
    requests: Requests<ForwardedRequest>,
    seen: BTreeMap<(Uuid, usize), SeenForwards>,
}

impl Forwards {
    /// Forwarded writes in flight.
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    /// The forwarded writes in flight to `node`, in id order.
    pub(super) fn waiting_on(&self, node: Uuid) -> impl Iterator<Item = RequestId> + '_ {
        self.requests
            .iter()
            .filter(move |(_, forwarded)| forwarded.to == node)
            .map(|(request, _)| request)
    }

    /// Forwards a client's write to `to`, a target, which coordinates it.
    pub(super) fn forward_write<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        now: Now,
        forward: ToForward,
    ) {
        let ToForward {
            client,
            to,
            write,
            options,
        } = forward;
        let return_body = write.options.return_body;
        ledger.stats.forwarded += 1;
        let request = ledger.deadlines.next_id();
        let forwarded = ForwardedRequest {
            client,
            to,
            bucket: write.bucket.clone(),
            key: write.key.clone(),
            w: options.w,
            pw: options.pw,
        };
        let deadline = cx.deadline(
            now,
            Duration::from_millis(options.timeout_ms) + FORWARD_GRACE,
        );
        self.requests
            .insert(&mut ledger.deadlines, request, deadline, forwarded);
        let forwarded = ForwardedWrite {
            bucket: write.bucket,
            key: write.key,
            value: write.value,
            content_type: write.content_type,
            context: write.context.map(|c| c.to_bytes()),
            w: options.w,
            pw: options.pw,
            timeout_ms: options.timeout_ms,
            sync: options.sync,
            sloppy: options.sloppy,
            return_body,
        };
        cx.send(
            to,
            Message::Forward {
                request,
                write: forwarded,
            },
        );
    }

    /// Whether forwarded write `request` from `from` (at `generation`)
    /// arrives for the first time. A forwarded write is applied once,
    /// however often its frame arrives (a retransmission, a duplicating
    /// network): a second coordination would mint a second version of one
    /// client write, a sibling nobody wrote. The copy is dropped without an
    /// answer; the forwarding node takes the first answer only. Ids grow
    /// within one shard of one incarnation of the sender, so they are
    /// remembered per sender and sender's shard, for the sender's newest
    /// generation (frames of older ones never get this far).
    pub(super) fn first_time(
        &mut self,
        ledger: &mut Ledger,
        from: Uuid,
        generation: u64,
        request: RequestId,
    ) -> bool {
        let sender = (from, shard_of_request(request));
        if !self.seen.contains_key(&sender) && self.seen.len() >= MAX_FORWARD_SENDERS {
            self.seen.pop_first();
        }
        if !self
            .seen
            .entry(sender)
            .or_default()
            .first_time(generation, request)
        {
            ledger.stats.forwards_repeated += 1;
            tracing::debug!(%from, request, "dropped a forwarded write delivered again");
            return false;
        }
        true
    }

    /// The coordinating replica's answer to forwarded write `request`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reply<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        bucket: &[u8],
        key: &[u8],
        result: Result<ForwardedReply, RequestError>,
    ) {
        let awaited = self
            .requests
            .get(request)
            .is_some_and(|f| f.answered_by(from, bucket, key));
        if !awaited {
            return;
        }
        let forwarded = self
            .requests
            .remove(&mut ledger.deadlines, request)
            .expect("checked above");
        let (client, result) = forwarded.on_reply(result);
        cx.reply(client, result);
    }

    /// Forwarded write `request` could not be sent to `to`: if it was
    /// forwarded there, its client learns that nothing was applied.
    pub(super) fn on_send_failed<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        to: SocketAddr,
        request: RequestId,
    ) {
        let forwarded_there = self
            .requests
            .get(request)
            .is_some_and(|f| cx.view.address_of(f.to) == Some(to));
        if forwarded_there {
            let forwarded = self
                .requests
                .remove(&mut ledger.deadlines, request)
                .expect("checked above");
            let (client, error) = forwarded.on_send_failed();
            cx.reply(client, Err(error));
        }
    }

    /// Ends forwarded write `request` without its answer (its time ran
    /// out, or the coordinating replica restarted): its client learns the
    /// write may have been applied. False if it is no forwarded write in
    /// flight.
    pub(super) fn give_up<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
    ) -> bool {
        let Some(forwarded) = self.requests.remove(&mut ledger.deadlines, request) else {
            return false;
        };
        tracing::debug!(to = %forwarded.to, request, "forwarded write given up");
        let (client, error) = forwarded.on_timeout();
        cx.reply(client, Err(error));
        true
    }
}

/// Checks a write another node forwarded for this one to coordinate and
/// places it, in the order Chorus always checked them: the ring agreed,
/// the shard not overloaded (`awaited` client requests in flight against
/// `max_pending`), the bounds, the context, the options, and this node a
/// target. `origin` is who waits for the outcome; refused, it is told
/// why.
pub(super) fn place_forwarded<S: Store>(
    cx: &Cx<'_, S>,
    origin: &Origin,
    write: ForwardedWrite,
    awaited: usize,
    max_pending: usize,
) -> Result<PlacedWrite, RequestError> {
    if !cx.view.ring_agreed {
        let error =
            RequestError::Unavailable("no ring, or the members do not agree on it yet".into());
        return Err(error);
    }
    if awaited >= max_pending {
        let busy = format!("{awaited} client requests in flight, the most this node takes");
        return Err(RequestError::Overloaded(busy));
    }
    if check_key("bucket", &write.bucket, MAX_BUCKET_LEN).is_err()
        || check_key("key", &write.key, MAX_KEY_LEN).is_err()
        || write
            .value
            .as_ref()
            .is_some_and(|v| v.len() > cx.parts.config.max_value_bytes)
        || write
            .content_type
            .as_deref()
            .is_some_and(|t| write.value.is_none() || check_content_type(t).is_err())
    {
        let error = RequestError::Internal("forwarded write out of bounds".into());
        return Err(error);
    }
    let context = match write.context.as_deref().map(CausalContext::from_bytes) {
        None => CausalContext::default(),
        Some(Ok(context)) => context,
        Some(Err(e)) => return Err(RequestError::Internal(e.to_string())),
    };
    let list = cx.view.preference_list(&write.bucket, &write.key);
    let (partition, n) = (list.partition(), list.n());
    if write.w == 0 || write.w > n || write.pw > write.w || write.timeout_ms == 0 {
        let error = RequestError::Internal("forwarded write with invalid options".into());
        return Err(error);
    }
    let options = ResolvedOptions {
        n,
        r: 1,
        w: write.w,
        pr: 0,
        pw: write.pw,
        timeout_ms: write.timeout_ms.min(crate::core::options::MAX_TIMEOUT_MS),
        sync: write.sync,
        sloppy: write.sloppy,
    };
    let targets = cx.view.targets(list, options.sloppy);
    if !targets.iter().any(|t| t.node == cx.me()) {
        let error = RequestError::Unavailable(
            "the replica a write was forwarded to is not a target in its own view of the cluster; retry"
                .into(),
        );
        return Err(error);
    }
    let uncovered = uncovered_primaries(list, &targets);
    Ok(PlacedWrite {
        origin: origin.clone(),
        key: WireKey {
            partition: partition.0,
            bucket: write.bucket,
            key: write.key,
        },
        value: write.value,
        content_type: write.content_type,
        context,
        options,
        return_body: write.return_body,
        n,
        targets,
        uncovered,
    })
}

/// A forwarded write's answer as the client gets it.
pub(super) fn decode_forwarded(reply: ForwardedReply) -> Result<WriteReply, RequestError> {
    let bad = |e: String| {
        RequestError::Internal(format!(
            "the coordinating replica returned a bad answer: {e}"
        ))
    };
    let context = CausalContext::from_bytes(&reply.context).map_err(|e| bad(e.to_string()))?;
    let object = match reply.object {
        Some(bytes) => Some(decode_object(&bytes).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    Ok(WriteReply::Written { context, object })
}
