//! The stream `UNIBUS_MESSAGES` (protocol §15.1): one subject per room, file storage, one
//! replica per node up to 3, a duplicate window, a retention age, and a republish of each stored
//! envelope to `unibus.live.<room>` for the fan-out.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use unibus::envelope::MAX_ENVELOPE_LEN;
use unibus::protocol::messages::{LIVE_PREFIX, STORE_PREFIX, STREAM};

use super::MessagesError;
use crate::store::{now_millis, Millis};

/// The duplicate window when none is configured: JetStream's own default.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The most replicas the stream has, whatever the cluster's size.
pub const MAX_REPLICAS: usize = 3;

/// The operator's settings of the stream (`--message-duplicate-window`,
/// `--message-max-age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Within this time of the first copy, an envelope sent again (the same `Nats-Msg-Id`) is
    /// not stored again.
    pub duplicate_window: Duration,
    /// How long the stream keeps an envelope; zero keeps it forever.
    pub max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: Duration::ZERO,
        }
    }
}

/// Positions a stream created at a moment starts from: [`POSITIONS_PER_MILLISECOND`] for each
/// millisecond since the Unix epoch. A stream created anew (after an operator deleted it, or
/// lost it) thus starts above every position the one before it gave, unless that one stored
/// more than a million envelopes a second on average, so that positions never repeat and never
/// go back, and clients' cursors stay below every new position (protocol §15.1). Below 2^53
/// until the year 2255, so JSON readers that hold numbers as doubles read them exactly.
pub fn first_position(now_millis: Millis) -> u64 {
    // A clock before 1970 gives the stream JetStream's own first position.
    u64::try_from(now_millis)
        .unwrap_or(0)
        .saturating_mul(POSITIONS_PER_MILLISECOND)
        .max(1)
}

/// See [`first_position`].
pub const POSITIONS_PER_MILLISECOND: u64 = 1_000;

/// The stream's configuration for a cluster of `nodes` nodes. Its first position
/// ([`first_position`]) is only set when the stream is created.
pub fn stream_config(settings: StreamSettings, nodes: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_string(),
        description: Some("unibus: every room's message envelopes (ciphertext)".into()),
        subjects: vec![format!("{STORE_PREFIX}.*")],
        storage: stream::StorageType::File,
        num_replicas: nodes.clamp(1, MAX_REPLICAS),
        // A record is an envelope and the stream's own headers; an envelope is never refused
        // for its size here (the control plane refuses oversized ones first).
        max_message_size: (MAX_ENVELOPE_LEN + 1024) as i32,
        duplicate_window: settings.duplicate_window,
        max_age: settings.max_age,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        deny_delete: false,
        republish: Some(stream::Republish {
            source: format!("{STORE_PREFIX}.>"),
            destination: format!("{LIVE_PREFIX}.>"),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// How long [`ensure_stream`] keeps trying while the cluster's JetStream comes up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the stream, or updates it to `settings` and the cluster's size: what every `serve`
/// does at start. Safe to run on every instance at once: creating a stream that exists with
/// the same configuration is a no-op, and an update to the same configuration too. Retried for
/// up to [`SETUP_TIMEOUT`] while the cluster elects its JetStream leader.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: StreamSettings,
    nodes: usize,
) -> Result<stream::Config, MessagesError> {
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        match create_or_update(js, settings, nodes).await {
            Ok(config) => return Ok(config),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "the message stream is not set up yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

async fn create_or_update(
    js: &jetstream::Context,
    settings: StreamSettings,
    nodes: usize,
) -> Result<stream::Config, MessagesError> {
    let config = stream_config(settings, nodes);
    let created = stream::Config {
        first_sequence: Some(first_position(now_millis())),
        ..config.clone()
    };
    match js.create_stream(created).await {
        Ok(_) => Ok(config),
        // It exists (another instance created it, maybe at once with this one): update it
        // to these settings, keeping its positions.
        Err(e) if is_name_in_use(&e) => {
            js.update_stream(config.clone())
                .await
                .map_err(|e| MessagesError::JetStream(format!("updating {STREAM}: {e}")))?;
            Ok(config)
        }
        Err(e) => Err(MessagesError::JetStream(format!("creating {STREAM}: {e}"))),
    }
}

fn is_name_in_use(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind;
    matches!(
        error.kind(),
        CreateStreamErrorKind::JetStream(e) if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// The number of JetStream servers in the cluster `system` (a connection of the system
/// account) is on: the meta group's size, 1 for a server that is not clustered.
pub async fn cluster_size(system: &async_nats::Client) -> Result<usize, MessagesError> {
    let server = system.server_info().server_id;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        system.request(format!("$SYS.REQ.SERVER.{server}.JSZ"), "{}".into()),
    )
    .await
    .map_err(|_| MessagesError::JetStream("the server's JetStream report timed out".into()))?
    .map_err(|e| MessagesError::JetStream(format!("the server's JetStream report: {e}")))?;
    let report: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| MessagesError::JetStream(format!("the server's JetStream report: {e}")))?;
    Ok(report["data"]["meta_cluster"]["cluster_size"]
        .as_u64()
        .map_or(1, |n| n.max(1) as usize))
}
