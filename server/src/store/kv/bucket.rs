//! Bucket primitives: every operation bounded by the op timeout, compare-and-swap that tells a
//! conflict from a failure, listings through one ordered consumer, and opening a bucket with
//! retries on a cold cluster.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};

use super::{KvStore, KvStoreConfig};
use crate::store::{StoreError, StoreResult};

/// How many times a compare-and-swap is retried under contention before giving up.
pub(super) const CAS_ATTEMPTS: usize = 64;

/// A bucket's message count, first and last sequence: see [`KvStore::version`].
pub(super) type BucketVersion = (u64, u64, u64);

/// How many listed entries one op timeout covers (a listing delivers tens of thousands a
/// second).
const LISTED_PER_TIMEOUT: u64 = 20_000;

/// How many passes a listing makes while its replica is behind the stream's leader (see
/// [`KvStore::listing`]); they wait 20 ms more each time, about a second in all.
const LISTING_PASSES: u32 = 10;

/// Whether the NATS subject `subject` matches `filter` (`*` one token, `>` the rest).
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(found)) if token == found => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

pub(super) fn backend(
    e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> StoreError {
    StoreError::backend("jetstream", e)
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("stored {what}: {e}")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain records cannot fail: no maps with non-string keys, no I/O.
    Bytes::from(serde_json::to_vec(value).expect("records serialize to JSON"))
}

/// Whether an update failed because the entry's revision changed (JetStream codes 10071 and
/// 10164, "wrong last sequence").
fn is_revision_conflict(error: &kv::UpdateError) -> bool {
    error.kind() == kv::UpdateErrorKind::WrongLastRevision || {
        let text = error.to_string();
        text.contains("10071") || text.contains("10164") || text.contains("wrong last sequence")
    }
}

impl KvStore {
    /// Bounds `future` by the op timeout.
    pub(super) async fn op<T, E: std::error::Error + Send + Sync + 'static>(
        &self,
        future: impl Future<Output = Result<T, E>>,
    ) -> StoreResult<T> {
        tokio::time::timeout(self.op_timeout, future)
            .await
            .map_err(|_| StoreError::Timeout(self.op_timeout))?
            .map_err(backend)
    }

    pub(super) async fn get(&self, bucket: &kv::Store, key: &str) -> StoreResult<Option<Bytes>> {
        self.op(bucket.get(key)).await
    }

    pub(super) async fn entry(
        &self,
        bucket: &kv::Store,
        key: &str,
    ) -> StoreResult<Option<kv::Entry>> {
        Ok(self
            .op(bucket.entry(key))
            .await?
            .filter(|e| e.operation == kv::Operation::Put))
    }

    pub(super) async fn put(&self, bucket: &kv::Store, key: &str, value: Bytes) -> StoreResult<()> {
        self.op(bucket.put(key, value)).await.map(|_| ())
    }

    /// Creates `key` only if it does not exist (or was deleted). `Ok(false)` if it exists.
    pub(super) async fn create(
        &self,
        bucket: &kv::Store,
        key: &str,
        value: Bytes,
    ) -> StoreResult<bool> {
        match tokio::time::timeout(self.op_timeout, bucket.create(key, value)).await {
            Err(_) => Err(StoreError::Timeout(self.op_timeout)),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Ok(Err(e)) => Err(backend(e)),
        }
    }

    /// Replaces the entry at `revision`. `Ok(false)` if the revision changed meanwhile.
    pub(super) async fn update(
        &self,
        bucket: &kv::Store,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> StoreResult<bool> {
        match tokio::time::timeout(self.op_timeout, bucket.update(key, value, revision)).await {
            Err(_) => Err(StoreError::Timeout(self.op_timeout)),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_revision_conflict(&e) => Ok(false),
            Ok(Err(e)) => Err(backend(e)),
        }
    }

    pub(super) async fn delete(&self, bucket: &kv::Store, key: &str) -> StoreResult<()> {
        self.op(bucket.delete(key)).await
    }

    /// The live entries whose keys match `filter` (a subject pattern relative to the bucket),
    /// read with one ordered consumer that delivers the last value per key. Creating the
    /// consumer is bounded by the op timeout, and delivery by one op timeout per
    /// [`LISTED_PER_TIMEOUT`] entries it announces, so a large listing is bounded too.
    pub(super) async fn entries(
        &self,
        bucket: &kv::Store,
        filter: &str,
    ) -> StoreResult<Vec<(String, Bytes)>> {
        let filter = format!("{}{filter}", bucket.prefix);
        self.listing(bucket, filter).await
    }

    /// The live entries the ordered consumer with this filter delivers, as the stream's leader
    /// holds them.
    ///
    /// nats-server places an ordered consumer on any replica of the stream, and a follower may
    /// not have applied the newest acknowledged writes yet: a listing it serves can miss them.
    /// So the pass is closed by the leader. Before it, the leader names the stream's last
    /// message (its sequence from the stream's info, its subject from a read by sequence, both
    /// answered by the leader); the pass also takes the last message of that subject, and it
    /// counts only if that comes at that sequence or later, proof that its replica holds every
    /// write acknowledged before the listing began. Otherwise the pass runs again, shortly.
    async fn listing(
        &self,
        bucket: &kv::Store,
        filter_subject: String,
    ) -> StoreResult<Vec<(String, Bytes)>> {
        let last = self.op(bucket.stream.get_info()).await?.state.last_sequence;
        let marker = match last {
            0 => None,
            last => {
                match tokio::time::timeout(self.op_timeout, bucket.stream.get_raw_message(last))
                    .await
                    .map_err(|_| StoreError::Timeout(self.op_timeout))?
                {
                    Ok(message) => Some((message.subject.to_string(), last)),
                    // Gone already (a purge or an age limit took it since): the pass is taken as it
                    // comes.
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => None,
                    Err(e) => return Err(backend(e)),
                }
            }
        };
        for attempt in 1..=LISTING_PASSES {
            let (entries, caught_up) = self.pass(bucket, &filter_subject, marker.as_ref()).await?;
            if caught_up {
                return Ok(entries);
            }
            tracing::debug!(
                attempt,
                "a listing's replica was behind the leader; listing again"
            );
            tokio::time::sleep(Duration::from_millis(20) * attempt).await;
        }
        Err(backend(format!(
            "a listing's replica stayed behind the stream's leader for {LISTING_PASSES} passes"
        )))
    }

    /// One pass of [`listing`](Self::listing): the entries matching `filter_subject`, and
    /// whether the pass delivered the last message of `marker`'s subject at `marker`'s sequence
    /// or later (always `true` without a marker).
    async fn pass(
        &self,
        bucket: &kv::Store,
        filter_subject: &str,
        marker: Option<&(String, u64)>,
    ) -> StoreResult<(Vec<(String, Bytes)>, bool)> {
        let prefix = bucket.prefix.clone();
        // The marker's subject is taken beside the filter, unless the filter covers it (filters
        // of one consumer may not overlap).
        let extra = marker
            .map(|(subject, _)| subject)
            .filter(|subject| !subject_matches(filter_subject, subject));
        let filter_subjects = match extra {
            Some(extra) => vec![filter_subject.to_string(), extra.clone()],
            None => vec![filter_subject.to_string()],
        };
        let consumer = self
            .op(bucket
                .stream
                .create_consumer(jetstream::consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    filter_subjects,
                    deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                    replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                    ..Default::default()
                }))
            .await?;
        let mut remaining = consumer.cached_info().num_pending;
        let bound = self.op_timeout * (remaining / LISTED_PER_TIMEOUT + 1).min(1_000) as u32;
        let mut caught_up = marker.is_none();
        let listing = async {
            let mut out = Vec::with_capacity(remaining as usize);
            if remaining == 0 {
                return Ok(out);
            }
            let mut messages = consumer.messages().await.map_err(backend)?;
            while remaining > 0 {
                let message = messages
                    .next()
                    .await
                    .ok_or_else(|| backend("listing ended early"))?
                    .map_err(backend)?;
                let info = message.info().map_err(backend)?;
                remaining = info.pending;
                if let Some((subject, sequence)) = marker {
                    if message.subject.as_str() == subject && info.stream_sequence >= *sequence {
                        caught_up = true;
                    }
                }
                if extra.is_some_and(|extra| message.subject.as_str() == extra) {
                    continue;
                }
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() != "PUT");
                if !deleted {
                    let key = message
                        .subject
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&message.subject)
                        .to_string();
                    out.push((key, message.payload.clone()));
                }
            }
            Ok(out)
        };
        let out = tokio::time::timeout(bound, listing)
            .await
            .map_err(|_| StoreError::Timeout(bound))??;
        Ok((out, caught_up))
    }

    /// A fingerprint of everything `bucket` holds: any put, delete or purge changes it.
    pub(super) async fn version(&self, bucket: &kv::Store) -> StoreResult<BucketVersion> {
        let info = self.op(bucket.stream.get_info()).await?;
        let state = info.state;
        Ok((state.messages, state.first_sequence, state.last_sequence))
    }

    /// Reads a JSON record, changes it with `change`, and writes it back with a
    /// compare-and-swap, retrying on contention. `change` returns `Ok(None)` to leave it as is.
    pub(super) async fn modify<T: DeserializeOwned + Serialize>(
        &self,
        bucket: &kv::Store,
        key: &str,
        what: &str,
        mut change: impl FnMut(T) -> StoreResult<Option<T>>,
    ) -> StoreResult<()> {
        for _ in 0..CAS_ATTEMPTS {
            let entry = self.entry(bucket, key).await?.ok_or(StoreError::NotFound)?;
            let Some(changed) = change(decode(what, &entry.value)?)? else {
                return Ok(());
            };
            if self
                .update(bucket, key, encode(&changed), entry.revision)
                .await?
            {
                return Ok(());
            }
        }
        Err(backend(format!("{what} {key}: too much contention")))
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        bucket: &kv::Store,
        key: &str,
        what: &str,
    ) -> StoreResult<T> {
        let bytes = self.get(bucket, key).await?.ok_or(StoreError::NotFound)?;
        decode(what, &bytes)
    }

    pub(super) async fn list_json<T: DeserializeOwned>(
        &self,
        bucket: &kv::Store,
        what: &str,
    ) -> StoreResult<Vec<T>> {
        let mut entries = self.entries(bucket, ">").await?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.iter().map(|(_, v)| decode(what, v)).collect()
    }
}

/// Opens the bucket `name` with the store's stream settings (see the
/// [module documentation](super)), creating it if missing, and retrying until `deadline`.
pub(super) async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    config: &KvStoreConfig,
    deadline: Instant,
) -> StoreResult<kv::Store> {
    open_aging_bucket(js, name, config, Duration::ZERO, deadline).await
}

/// Like [`open_bucket`], but JetStream drops each entry `max_age` after it was written (never
/// for zero). A bucket opened before with another age is given this one.
pub(super) async fn open_aging_bucket(
    js: &jetstream::Context,
    name: &str,
    config: &KvStoreConfig,
    max_age: Duration,
    deadline: Instant,
) -> StoreResult<kv::Store> {
    let stream_config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_age,
        ..Default::default()
    };
    let mut last_error = String::from("no attempt finished");
    while Instant::now() < deadline {
        let attempt = async {
            let mut stream = js
                .get_or_create_stream(stream_config.clone())
                .await
                .map_err(backend)?;
            let info = stream.info().await.map_err(backend)?;
            if info.config.num_replicas != config.replicas || info.config.max_age != max_age {
                let mut updated = info.config.clone();
                updated.num_replicas = config.replicas;
                updated.max_age = max_age;
                js.update_stream(&updated).await.map_err(backend)?;
            }
            js.get_key_value(name).await.map_err(backend)
        };
        match tokio::time::timeout(config.attempt_timeout, attempt).await {
            Ok(Ok(bucket)) => return Ok(bucket),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("attempt timed out after {:?}", config.attempt_timeout),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(backend(format!(
        "bucket {name} not ready within {:?}: {last_error}",
        config.bootstrap_budget
    )))
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_filters_token_by_token() {
        let filter = "$KV.UNIBUS_members.m.general.*";
        assert!(subject_matches(filter, "$KV.UNIBUS_members.m.general.ab12"));
        assert!(!subject_matches(filter, "$KV.UNIBUS_members.m.general"));
        assert!(!subject_matches(
            filter,
            "$KV.UNIBUS_members.m.general.ab12.x"
        ));
        assert!(!subject_matches(filter, "$KV.UNIBUS_members.m.other.ab12"));
        assert!(subject_matches("$KV.b.>", "$KV.b.x.y"));
        assert!(!subject_matches("$KV.b.>", "$KV.b"));
        assert!(subject_matches("$KV.b.x", "$KV.b.x"));
    }
}
