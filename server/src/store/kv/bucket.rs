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

    /// The live entries the ordered consumer with this filter delivers.
    async fn listing(
        &self,
        bucket: &kv::Store,
        filter_subject: String,
    ) -> StoreResult<Vec<(String, Bytes)>> {
        let prefix = bucket.prefix.clone();
        let consumer = self
            .op(bucket
                .stream
                .create_consumer(jetstream::consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    filter_subject,
                    deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                    replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                    ..Default::default()
                }))
            .await?;
        let mut remaining = consumer.cached_info().num_pending;
        let bound = self.op_timeout * (remaining / LISTED_PER_TIMEOUT + 1).min(1_000) as u32;
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
                remaining = message.info().map_err(backend)?.pending;
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
        tokio::time::timeout(bound, listing)
            .await
            .map_err(|_| StoreError::Timeout(bound))?
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
