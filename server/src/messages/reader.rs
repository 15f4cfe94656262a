//! The stream reads a `messages` page needs: JetStream's batched direct get (nats-server 2.11
//! and later), which streams up to `batch` of one subject's messages from a sequence on to an
//! inbox and ends with a `204` status message, and the single direct get of a subject's last
//! message. Every read is bounded in messages, bytes and time.
//!
//! Each stored message comes with `Nats-Num-Pending`: how many messages of the same subject
//! the stream holds after it. A page uses it to say whether more follow, and to count a room's
//! messages in a range of positions without reading them (`pending(x) - pending(y)`).

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use futures::StreamExt;
use unibus::protocol::messages::STREAM;

use super::MessagesError;

/// How long one read may take, from the request to its last message.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored envelope as the stream gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence in the stream (the envelope's position).
    pub position: u64,
    /// When the stream stored it, in milliseconds since the Unix epoch.
    pub time: u64,
    /// How many messages of the same room the stream held after it when it was read.
    pub pending: u64,
    /// The envelope.
    pub envelope: Bytes,
}

/// Reads the stream `UNIBUS_MESSAGES` on one connection of the users' account.
#[derive(Debug, Clone)]
pub struct StreamReader {
    client: async_nats::Client,
}

/// A status message's code, if the message is one.
fn status(message: &async_nats::Message) -> Option<u16> {
    message.status.map(|code| code.as_u16())
}

/// The headers of a direct get's message as a [`Stored`].
fn stored(message: async_nats::Message) -> Result<Stored, MessagesError> {
    let pending = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Num-Pending"))
        .and_then(|v| v.as_str().parse().ok());
    let message = StreamMessage::try_from(message)
        .map_err(|e| MessagesError::Malformed(format!("a direct get's reply: {e}")))?;
    Ok(Stored {
        position: message.sequence,
        time: millis(message.time),
        pending: pending.unwrap_or(0),
        envelope: message.payload,
    })
}

/// A stream time in milliseconds since the Unix epoch (0 before it).
pub fn millis(time: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl StreamReader {
    /// A reader on `client`, a connection of the users' account.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }

    fn subject() -> String {
        format!("$JS.API.DIRECT.GET.{STREAM}")
    }

    /// Up to `batch` messages of `subject` from sequence `from` on, oldest first, stopping
    /// after the message that makes them exceed `max_bytes` (so at least one, when there is
    /// one).
    pub async fn forward(
        &self,
        subject: &str,
        from: u64,
        batch: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, MessagesError> {
        let request = serde_json::json!({
            "seq": from.max(1),
            "next_by_subj": subject,
            "batch": batch.max(1),
            "max_bytes": max_bytes.max(1),
        });
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| MessagesError::JetStream(format!("direct get: {e}")))?;
        self.client
            .publish_with_reply(Self::subject(), inbox, request.to_string().into())
            .await
            .map_err(|e| MessagesError::JetStream(format!("direct get: {e}")))?;
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        let mut out = Vec::new();
        loop {
            let message = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| MessagesError::JetStream("direct get timed out".into()))?
                .ok_or_else(|| MessagesError::JetStream("direct get: connection closed".into()))?;
            match status(&message) {
                // The end of the batch; or nothing at all from `from` on.
                Some(204) | Some(404) => return Ok(out),
                Some(code) => {
                    return Err(MessagesError::JetStream(format!(
                        "direct get answered {code} {}",
                        message.description.as_deref().unwrap_or("")
                    )))
                }
                None if out.len() >= batch.max(1) => {
                    return Err(MessagesError::JetStream(
                        "direct get sent more messages than asked for".into(),
                    ))
                }
                None => out.push(stored(message)?),
            }
        }
    }

    /// The first message of `subject` at or after sequence `from`, if any.
    pub async fn first_from(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<Option<Stored>, MessagesError> {
        Ok(self.forward(subject, from, 1, 1).await?.pop())
    }

    /// The last message of `subject`, if any.
    pub async fn last(&self, subject: &str) -> Result<Option<Stored>, MessagesError> {
        let request = serde_json::json!({ "last_by_subj": subject });
        let reply = tokio::time::timeout(
            READ_TIMEOUT,
            self.client
                .request(Self::subject(), request.to_string().into()),
        )
        .await
        .map_err(|_| MessagesError::JetStream("direct get timed out".into()))?
        .map_err(|e| MessagesError::JetStream(format!("direct get: {e}")))?;
        match status(&reply) {
            Some(404) => Ok(None),
            Some(code) => Err(MessagesError::JetStream(format!(
                "direct get answered {code} {}",
                reply.description.as_deref().unwrap_or("")
            ))),
            None => stored(reply).map(Some),
        }
    }
}
