//! `send` and `messages` (protocol §15.2, §15.3): membershipd stores envelopes for their
//! senders (those whose login was not granted the room; the others publish to it themselves)
//! and reads rooms' envelopes for their members. Every check is the control plane's own, made
//! at every request; users never read the stream themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use unibus::envelope::{Envelope, MAX_ENVELOPE_LEN};
use unibus::manifest::{ManifestHeader, MemberPart};
use unibus::protocol::codes::{Refusal, RefusalCode};
use unibus::protocol::messages::{
    dedup_id, store_subject, MessagePage, MessagesRequest, SendReply, StoredMessage, DEFAULT_PAGE,
    MAX_PAGE,
};
use unibus::{RoomId, SignPublicKey};

use super::reader::{Stored, StreamReader};
use super::MessagesError;
use crate::control::{member_room, refused, store_refusal};
use crate::store::{Store, StoreError};

/// How long `send` waits for the stream's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a backward page is searched again when the room changed under the search
/// (retention dropped its oldest envelopes meanwhile) before the request is `unavailable`.
const BACKWARD_ATTEMPTS: usize = 8;

/// How many epochs' signed headers a relay keeps (about 200 bytes each); a full set starts
/// over.
const HEADERS_KEPT: usize = 10_000;

/// The relay between the control plane and the stream. See the [module documentation](self).
pub struct Relay {
    store: Arc<dyn Store>,
    js: jetstream::Context,
    reader: StreamReader,
    /// The signed headers of epochs read from the store: an epoch's header never changes once
    /// stored, so a send in a known epoch reads nothing to check its sender's proof.
    headers: Mutex<HashMap<(RoomId, u64), Arc<ManifestHeader>>>,
}

fn bad_envelope(message: impl Into<String>) -> Refusal {
    refused(RefusalCode::BadEnvelope, message)
}

/// A stream that refuses or does not answer: the caller retries.
fn unavailable(error: MessagesError) -> Refusal {
    tracing::warn!(error = %error, "the message stream failed a request");
    refused(
        RefusalCode::Unavailable,
        "the message stream is unavailable; retry later",
    )
}

impl Relay {
    /// A relay on `client`, membershipd's control-plane connection in the users' account,
    /// where the stream lives.
    pub fn new(store: Arc<dyn Store>, client: async_nats::Client) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        Self {
            store,
            js,
            reader: StreamReader::new(client),
            headers: Mutex::default(),
        }
    }

    /// `send`: the checks of §15.2 in their order, then the publish and its acknowledgement.
    pub async fn send(&self, caller: &SignPublicKey, body: &[u8]) -> Result<SendReply, Refusal> {
        if body.len() > MAX_ENVELOPE_LEN {
            return Err(bad_envelope(format!(
                "an envelope is at most {MAX_ENVELOPE_LEN} bytes, got {}",
                body.len()
            )));
        }
        let envelope = Envelope::from_bytes(body).map_err(|e| bad_envelope(e.to_string()))?;
        if envelope.sender() != caller {
            return Err(bad_envelope("the envelope's sender is not the caller"));
        }
        let room = member_room(&*self.store, envelope.room(), caller).await?;
        if room.epoch == 0 {
            return Err(refused(RefusalCode::NoKey, "the room has no key yet"));
        }
        if envelope.epoch() != room.epoch {
            return Err(refused(
                RefusalCode::StaleEpoch,
                format!(
                    "the room's latest epoch is {}, not {}; fetch its key and seal again",
                    room.epoch,
                    envelope.epoch()
                ),
            ));
        }
        let header = self.header(caller, envelope.room(), room.epoch).await?;
        envelope
            .verify_sender(&header)
            .map_err(|e| bad_envelope(e.to_string()))?;
        let id = dedup_id(envelope.room(), caller, envelope.id());
        let publish = PublishMessage::build()
            .message_id(id)
            .payload(bytes::Bytes::copy_from_slice(body));
        let ack = self
            .js
            .send_publish(store_subject(envelope.room()), publish)
            .await
            .map_err(|e| unavailable(MessagesError::JetStream(format!("publish: {e}"))))?
            .await
            .map_err(|e| unavailable(MessagesError::JetStream(format!("acknowledgement: {e}"))))?;
        Ok(SendReply {
            position: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The stored signed header of `room`'s `epoch`, kept from an earlier send or read from the
    /// caller's own part of it: a caller who is not one of its recipients has no part, and
    /// could not have a valid proof for it either.
    async fn header(
        &self,
        caller: &SignPublicKey,
        room: &RoomId,
        epoch: u64,
    ) -> Result<Arc<ManifestHeader>, Refusal> {
        let key = (room.clone(), epoch);
        if let Some(header) = self.kept_headers().get(&key) {
            return Ok(Arc::clone(header));
        }
        let part = match self.store.member_part(room, caller, Some(epoch)).await {
            Ok(part) => part,
            Err(StoreError::NotFound) => {
                return Err(bad_envelope(
                    "you are not a recipient of the room's latest epoch",
                ))
            }
            Err(e) => return Err(store_refusal(e)),
        };
        let part = MemberPart::from_bytes(&part.part).map_err(|e| {
            store_refusal(StoreError::Corrupt(format!("a stored member part: {e}")))
        })?;
        let header = Arc::new(part.unverified_header().clone());
        let mut kept = self.kept_headers();
        if kept.len() >= HEADERS_KEPT {
            kept.clear();
        }
        kept.insert(key, Arc::clone(&header));
        Ok(header)
    }

    fn kept_headers(&self) -> MutexGuard<'_, HashMap<(RoomId, u64), Arc<ManifestHeader>>> {
        // Entries are inserted whole; a poisoned lock still guards a sound map.
        self.headers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `messages`: one page of the room's envelopes, for a member, no larger than
    /// `max_bytes` in all (at least one envelope when there is one).
    pub async fn messages(
        &self,
        caller: &SignPublicKey,
        request: MessagesRequest,
        max_bytes: usize,
    ) -> Result<MessagePage, Refusal> {
        let limit = page_limit(&request)?;
        if !self
            .store
            .is_member(&request.room, caller)
            .await
            .map_err(store_refusal)?
        {
            return Err(crate::control::not_member());
        }
        let budget = max_bytes.saturating_sub(MessagePage::HEAD_LEN);
        let subject = store_subject(&request.room);
        let page = match (request.after, request.before) {
            (Some(after), _) => self.forward(&subject, after, limit, budget).await,
            (None, Some(before)) => self.backward(&subject, before, limit, budget).await,
            (None, None) => match self.reader.last(&subject).await {
                Ok(Some(last)) => {
                    self.backward(&subject, last.position + 1, limit, budget)
                        .await
                }
                Ok(None) => Ok(MessagePage::default()),
                Err(e) => Err(e),
            },
        };
        page.map_err(unavailable)
    }

    /// The room's first `limit` envelopes after `after`, as many as fit in `budget`.
    async fn forward(
        &self,
        subject: &str,
        after: u64,
        limit: usize,
        budget: usize,
    ) -> Result<MessagePage, MessagesError> {
        let read = self
            .reader
            .forward(subject, after + 1, limit, budget)
            .await?;
        let received = read.len();
        let messages = fit_from_start(read, budget);
        let more =
            messages.len() < received || messages.last().is_some_and(|last| last.pending > 0);
        Ok(page(messages, more))
    }

    /// The room's last `limit` envelopes before `before`, as many as fit in `budget`.
    ///
    /// JetStream reads forward only. With `pending(x)`, how many of the room's envelopes lie
    /// at or after position `x`, a binary search over positions finds the room's `limit`-th
    /// envelope before `before` in at most 64 single-message reads, without reading those in
    /// between; one batched read from there gives the page. If the envelopes do not all fit in
    /// `budget`, the search runs again for as many as did fit, so the page always ends right
    /// before `before`.
    async fn backward(
        &self,
        subject: &str,
        before: u64,
        limit: usize,
        budget: usize,
    ) -> Result<MessagePage, MessagesError> {
        let Some(first) = self.reader.first_from(subject, 1).await? else {
            return Ok(MessagePage::default());
        };
        if first.position >= before {
            return Ok(MessagePage::default());
        }
        let mut want = limit;
        for _ in 0..BACKWARD_ATTEMPTS {
            // At or after `before`: the same for every probe below, as long as nothing is
            // appended meanwhile (which only makes the search start later: a shorter page).
            let after_end = match self.reader.first_from(subject, before).await? {
                Some(m) => m.pending + 1,
                None => 0,
            };
            let count = |m: &Stored| (m.pending + 1).saturating_sub(after_end);
            // The largest position `lo` with at least `want` envelopes in [lo, before).
            let (mut lo, mut hi) = (first.position, before);
            if count(&first) > want as u64 {
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match self.reader.first_from(subject, mid).await? {
                        Some(m) if m.position < before && count(&m) >= want as u64 => {
                            lo = m.position
                        }
                        _ => hi = mid,
                    }
                }
            }
            let read = self.reader.forward(subject, lo, want, budget).await?;
            let mut read: Vec<Stored> = read.into_iter().filter(|m| m.position < before).collect();
            let fits = fit_from_start(std::mem::take(&mut read), budget);
            let Some(last) = fits.last() else {
                return Ok(MessagePage::default());
            };
            // The page must end right before `before`: nothing of the room in between.
            let next = self.reader.first_from(subject, last.position + 1).await?;
            if next.is_none_or(|m| m.position >= before) {
                let more = fits.first().is_some_and(|m| m.position > first.position);
                return Ok(page(fits, more));
            }
            // Fewer fit than were wanted, or the room changed: search for as many as fit.
            want = fits.len().min(want);
        }
        Err(MessagesError::JetStream(
            "the room changed under every attempt to read a page backwards".into(),
        ))
    }
}

/// `limit` as asked (1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when left out), with `after` and
/// `before` not both given and neither above 2^63 − 1.
fn page_limit(request: &MessagesRequest) -> Result<usize, Refusal> {
    let bad = |message: &str| refused(RefusalCode::BadRequest, message);
    if request.after.is_some() && request.before.is_some() {
        return Err(bad("give at most one of `after` and `before`"));
    }
    let max = unibus::manifest::MAX_EPOCH;
    if request.after.is_some_and(|p| p > max) || request.before.is_some_and(|p| p > max) {
        return Err(bad("a position is at most 2^63 - 1"));
    }
    match request.limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(bad("`limit` must be at least 1")),
        n if n > MAX_PAGE => Err(bad("`limit` is at most 1000")),
        n => Ok(n as usize),
    }
}

/// The first of `read` whose records fit in `budget` together; at least one.
fn fit_from_start(read: Vec<Stored>, budget: usize) -> Vec<Stored> {
    let mut used = 0;
    let mut out = Vec::with_capacity(read.len());
    for message in read {
        used += MessagePage::record_len(message.envelope.len());
        if used > budget && !out.is_empty() {
            break;
        }
        out.push(message);
    }
    out
}

fn page(messages: Vec<Stored>, more: bool) -> MessagePage {
    MessagePage {
        messages: messages
            .into_iter()
            .map(|m| StoredMessage {
                position: m.position,
                time: m.time,
                envelope: m.envelope.to_vec(),
            })
            .collect(),
        more,
    }
}
