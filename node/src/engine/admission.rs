//! Admission of client requests: bounds on bucket, key, value and content
//! type, the node's readiness, the limit on requests a client waits for,
//! and the admission queue where requests wait (bounded in count, bytes
//! and time) while background work holds its budget.

use std::collections::VecDeque;
use std::time::Duration;

use chorus_storage::object::{check_content_type, ContentTypeError};
use chorus_storage::store::{Store, MAX_BUCKET_LEN, MAX_KEY_LEN};

use super::io::{check_key, ClientId, ClientRequest, Now};
use super::parts::Cx;
use super::requests::Ledger;
use crate::api::{RequestError, WriteRequest};

/// A client request waiting for admission while background work is over
/// its budget.
#[derive(Debug)]
struct Queued {
    client: ClientId,
    request: ClientRequest,
    /// When it was queued (monotonic).
    since: Duration,
    /// The bytes of its value.
    bytes: usize,
}

impl Queued {
    /// When its time runs out: a request waits for admission at most for
    /// its own timeout, and the time it waited counts toward it.
    fn deadline(&self) -> Duration {
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

/// Checks a client request before it is admitted: the bounds on bucket,
/// key, value and content type, and whether the node can serve (an
/// identity conflict, a failed store, no ring or no agreement on it).
/// Whether the shard has room is the shard's to say.
pub(super) fn check<S: Store>(cx: &Cx<'_, S>, request: &ClientRequest) -> Result<(), RequestError> {
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
    Ok(())
}

/// A shard's admission queue: client requests waiting, oldest first,
/// while background work holds its budget (backpressure), bounded in
/// count and bytes by the shard's budget and in time by each request's
/// own timeout.
#[derive(Debug, Default)]
pub(super) struct Admission {
    queue: VecDeque<Queued>,
    /// Bytes of values in `queue`.
    bytes: usize,
}

impl Admission {
    /// Client requests waiting.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the first waiting request's time runs out.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.queue.iter().map(Queued::deadline).min()
    }

    /// Queues a client request until background work is back under its
    /// budget, or refuses it as overloaded when the queue is full.
    pub(super) fn enqueue<S: Store>(
        &mut self,
        ledger: &mut Ledger,
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
        if self.queue.len() >= ledger.budget.max_queued_requests
            || self.bytes + bytes > ledger.budget.max_queued_bytes
        {
            ledger.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "{} requests ({} bytes) already wait for admission",
                self.queue.len(),
                self.bytes
            ));
            return cx.reply(client, Err(error));
        }
        self.bytes += bytes;
        self.queue.push_back(Queued {
            client,
            request,
            since: now.mono,
            bytes,
        });
    }

    /// The oldest waiting request, admitted at `now`: the time it waited
    /// is taken off its timeout.
    pub(super) fn pop(&mut self, now: Now) -> Option<(ClientId, ClientRequest)> {
        let queued = self.queue.pop_front()?;
        self.bytes -= queued.bytes;
        let client = queued.client;
        Some((client, queued.into_admitted(now)))
    }

    /// Refuses waiting requests whose timeout ran out while they waited:
    /// nothing was done for them.
    pub(super) fn expire<S: Store>(&mut self, ledger: &mut Ledger, cx: &mut Cx<'_, S>, now: Now) {
        if !self.queue.iter().any(|q| q.deadline() <= now.mono) {
            return;
        }
        let (expired, waiting): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|q| q.deadline() <= now.mono);
        self.queue = waiting.into();
        for queued in expired {
            self.bytes -= queued.bytes;
            ledger.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "waited its whole timeout ({} ms) for background work to drain",
                queued.request.options().timeout_ms
            ));
            cx.reply(queued.client, Err(error));
        }
    }
}
