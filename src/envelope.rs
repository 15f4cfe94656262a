//! Message envelopes: one room message, encrypted under its epoch's room key and signed by its
//! sender, with the sender's proof of membership in that epoch.
//!
//! An envelope is what travels and what the cluster stores; nothing in it but its header is
//! readable without the room key. It is specified byte by byte in `docs/protocol.md` §14, with
//! golden vectors in `tests/vectors/message-envelope-v1.json`:
//!
//! ```text
//! header    = 0x01 || u16 len(room) || room || u64 epoch || message id (16) || u64 sent_at
//!             || u8 len(content type) || content type || u32 leaf index || sender's entry (145)
//!             || u8 k || k * hash (32) || u32 body length
//! envelope  = header || ciphertext (body length + 16) || signature (64)
//!
//! key, nonce = HKDF-SHA256(salt = message id, ikm = room key,
//!                          info = KEY_LABEL || u16 len(room) || room || u64 epoch || sender, 44)
//! ciphertext = ChaCha20-Poly1305(key, nonce, aad = header, body)
//! signature  = Ed25519(sender, SIGNING_CONTEXT || header || ciphertext)
//! ```
//!
//! The sender's entry (its manifest entry) with its leaf index and audit path proves, against the
//! epoch's signed Merkle root, that the epoch's manifest lists the sender: a receiver checks it
//! against the header it verified when it opened its own key ([`EpochKey`]), so it needs neither
//! the whole manifest nor the server's word. Every message has a fresh random id, and its key
//! and nonce are derived from it, so no counter is shared between devices that share an identity.
//!
//! ```
//! use unibus::envelope::{ContentType, Envelope, EpochKey};
//! use unibus::manifest::{MemberPart, Recipient, SignedManifest};
//! use unibus::sealing::RoomKey;
//! use unibus::{Identity, RoomId};
//!
//! let owner = Identity::generate()?;
//! let member = Identity::generate()?;
//! let room = RoomId::new("general")?;
//! let members = [Recipient::of(&owner), Recipient::of(&member)];
//! let manifest = SignedManifest::rekey(&owner, &room, 1, 0, &RoomKey::generate()?, &members)?;
//! // Each of them opens its own member part, as fetched from the server.
//! let epoch_key = |who: &Identity| {
//!     let part = manifest.member_part(&who.sign_public_key()).expect("a member");
//!     EpochKey::open(&part, who, &room, 1, &owner.sign_public_key())
//! };
//! let (owner_key, member_key) = (epoch_key(&owner)?, epoch_key(&member)?);
//!
//! let text = ContentType::new("text/plain")?;
//! let wire = Envelope::seal(&owner, &owner_key, &text, b"hello", 1_700_000_000_000)?.to_bytes();
//!
//! let message = Envelope::from_bytes(&wire)?.open(&member_key)?;
//! assert_eq!(message.body(), b"hello");
//! assert_eq!(message.sender(), &owner.sign_public_key());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::hex::{self, HexError};
use crate::history::{HistoryError, HistoryShare};
use crate::keys::{DecodedSignKey, SignPublicKey, Signature, SIGNATURE_LEN};
use crate::manifest::merkle::{self, Hash, ProofError, HASH_LEN};
use crate::manifest::{
    ManifestEntry, ManifestError, ManifestHeader, MemberPart, SignedHead, ENTRY_LEN, MAX_EPOCH,
    MAX_PROOF_LEN,
};
use crate::room::{RoomId, ROOM_ID_MAX_LEN};
use crate::sealing::RoomKey;
use crate::wire::{Reader, Short};
use crate::Identity;

/// Version byte of the envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
/// What the sender signs before the envelope's bytes: `unibus/message/v1`.
pub const SIGNING_CONTEXT: &[u8] = b"unibus/message/v1";
/// What starts the HKDF `info` of a message's key: `unibus/message-key/v1`.
pub const KEY_LABEL: &[u8] = b"unibus/message-key/v1";
/// The largest body, in bytes: 64 KiB.
pub const MAX_BODY_LEN: usize = 65_536;
/// The longest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;
/// Length of a message id in bytes.
pub const MESSAGE_ID_LEN: usize = 16;
/// Length of the ChaCha20-Poly1305 tag that follows the encrypted body.
pub const TAG_LEN: usize = 16;
/// Length of the AEAD key derived for one message.
pub const MESSAGE_KEY_LEN: usize = 32;
/// Length of the AEAD nonce derived for one message.
pub const NONCE_LEN: usize = 12;
/// The latest `sent_at` an envelope may carry: 2^63 − 1 milliseconds.
pub const MAX_SENT_AT: u64 = i64::MAX as u64;

/// Length of [`SIGNING_CONTEXT`], which precedes the wire form inside an [`Envelope`].
const CONTEXT_LEN: usize = SIGNING_CONTEXT.len();

/// The fixed part of the header: everything but the room id, the content type and the path.
const HEADER_BASE_LEN: usize = 1 + 2 + 8 + MESSAGE_ID_LEN + 8 + 1 + 4 + ENTRY_LEN + 1 + 4;

/// Length in bytes of an envelope for a room id of `room_len` bytes, a content type of
/// `content_type_len` bytes, an audit path of `proof_len` hashes and a body of `body_len` bytes:
/// `270 + room_len + content_type_len + 32 × proof_len + body_len`.
pub const fn envelope_len(
    room_len: usize,
    content_type_len: usize,
    proof_len: usize,
    body_len: usize,
) -> usize {
    HEADER_BASE_LEN
        + room_len
        + content_type_len
        + proof_len * HASH_LEN
        + body_len
        + TAG_LEN
        + SIGNATURE_LEN
}

/// The longest envelope: the longest room id and content type, the longest path and the largest
/// body (66,701 bytes).
pub const MAX_ENVELOPE_LEN: usize = envelope_len(
    ROOM_ID_MAX_LEN,
    MAX_CONTENT_TYPE_LEN,
    MAX_PROOF_LEN,
    MAX_BODY_LEN,
);

/// Why a message could not be sealed, decoded or opened. The messages never contain a key or
/// a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes end before the envelope does.
    #[error("the envelope is truncated")]
    Truncated,
    /// Bytes follow the end of the envelope.
    #[error("the envelope has {extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The version byte is unknown.
    #[error("the envelope has unsupported version {version}; update the SDK")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A field is out of its allowed range; the message names it.
    #[error("the envelope is malformed: {reason}")]
    Malformed {
        /// Which field and why.
        reason: String,
    },
    /// The body is larger than [`MAX_BODY_LEN`]. Split it, or send a reference to it.
    #[error("a message body is at most {MAX_BODY_LEN} bytes, got {len}")]
    BodyTooLarge {
        /// The body's length.
        len: usize,
    },
    /// The content type is empty, too long, or not printable ASCII.
    #[error(
        "a content type is 1 to {MAX_CONTENT_TYPE_LEN} printable ASCII characters \
         (0x20 to 0x7e), like `text/plain`"
    )]
    ContentType,
    /// The envelope is for another room or epoch than the epoch key it was opened with.
    #[error("the envelope is for room {room} epoch {epoch}; open it with that epoch's key")]
    WrongEpoch {
        /// The envelope's room.
        room: RoomId,
        /// The envelope's epoch.
        epoch: u64,
    },
    /// The sender's proof of membership does not verify against the epoch's signed Merkle root:
    /// the epoch's manifest does not list the sender (the source says how the proof failed).
    #[error("the sender is not a member of the room at this epoch")]
    NotAMember(#[source] ProofError),
    /// The sender's signature does not verify: the envelope was altered or forged.
    #[error("the message's signature does not verify under its sender's key")]
    BadSignature,
    /// The signature verifies, but the body does not decrypt under the epoch's key: the sender
    /// encrypted it with another key.
    #[error("the message does not decrypt under the epoch's room key")]
    DecryptFailed,
    /// Sealing: the identity is not the member whose epoch key was given.
    #[error("this epoch key was opened by another member; seal with its own identity")]
    NotTheKeyHolder,
    /// Sealing: the epoch key was opened from a history share, so the sender has no entry in the
    /// epoch's manifest and cannot prove its membership of that epoch.
    #[error(
        "the key of epoch {epoch} was shared as history: it reads that epoch's messages but \
         cannot send in it; send with the room's latest key"
    )]
    ReadOnlyKey {
        /// The epoch of the key.
        epoch: u64,
    },
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
}

impl From<Short> for EnvelopeError {
    fn from(short: Short) -> Self {
        match short {
            Short::Truncated => EnvelopeError::Truncated,
            Short::Trailing(extra) => EnvelopeError::TrailingBytes { extra },
        }
    }
}

/// A message's id: 16 random bytes chosen by its sender, written as 32 lowercase hex
/// characters. It is unique per sender and room: a receiver takes a second message with the
/// same sender and id for a replay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId([u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// A fresh id from the OS CSPRNG.
    pub fn generate() -> Result<Self, EnvelopeError> {
        let mut id = [0u8; MESSAGE_ID_LEN];
        getrandom::fill(&mut id).map_err(|e| EnvelopeError::Rng(e.to_string()))?;
        Ok(Self(id))
    }

    /// Wraps 16 bytes.
    pub fn from_bytes(bytes: [u8; MESSAGE_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; MESSAGE_ID_LEN] {
        &self.0
    }

    /// Parses 32 hex characters of either case.
    pub fn from_hex(text: &str) -> Result<Self, MessageIdError> {
        hex::decode_array(text).map(Self).map_err(|e| match e {
            HexError::Length { actual } => MessageIdError::WrongLength { actual },
            HexError::Character { position } => MessageIdError::NotHex { position },
        })
    }

    /// The canonical form: 32 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl std::str::FromStr for MessageId {
    type Err = MessageIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

crate::serde_as_string!(MessageId);

/// Why a message id's text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageIdError {
    /// The text does not have 32 characters.
    #[error("a message id is 32 hex characters, got {actual}")]
    WrongLength {
        /// How many characters were given.
        actual: usize,
    },
    /// A character is not a hex digit.
    #[error("a message id has a non-hex character at position {position}")]
    NotHex {
        /// Byte offset of the first bad character.
        position: usize,
    },
}

/// What a body is, as its sender names it: 1 to [`MAX_CONTENT_TYPE_LEN`] printable ASCII
/// characters, for example `text/plain` or `application/vnd.example.reaction+json`. unibus
/// carries it, signed and authenticated, and gives it no meaning.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContentType(String);

impl ContentType {
    /// Checks and wraps a content type.
    pub fn new(text: &str) -> Result<Self, EnvelopeError> {
        if text.is_empty()
            || text.len() > MAX_CONTENT_TYPE_LEN
            || !text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(EnvelopeError::ContentType);
        }
        Ok(Self(text.to_owned()))
    }

    /// The content type's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentType({:?})", self.0)
    }
}

/// One epoch of a room as a member holds it: the epoch's verified header and the room key, and,
/// when the member opened its own member part, its entry with its leaf index and audit path (its
/// proof of membership, which its envelopes carry). A key opened from a history share
/// ([`EpochKey::from_share`]) has no entry: it opens and verifies the epoch's messages but cannot
/// send in it ([`EnvelopeError::ReadOnlyKey`]). `Debug` redacts the key.
///
/// Receivers check senders' proofs against this header; senders put their entry and path in
/// their envelopes.
#[derive(Clone)]
pub struct EpochKey {
    /// The epoch's signed head, verified when the key was opened.
    head: SignedHead,
    holder: SignPublicKey,
    own: Option<OwnEntry>,
    key: RoomKey,
}

/// The holder's own place in an epoch's manifest: what its envelopes carry.
#[derive(Clone)]
struct OwnEntry {
    index: u32,
    entry: ManifestEntry,
    proof: Vec<Hash>,
}

impl EpochKey {
    /// Verifies and opens `identity`'s member part for `room` at `epoch`, every check of
    /// `docs/protocol.md` §8.5 with `trusted_rekeyer` (the room's pinned owner), and keeps what
    /// messages of that epoch need.
    pub fn open(
        part: &MemberPart,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<Self, ManifestError> {
        let key = part.open(identity, room, epoch, trusted_rekeyer)?;
        Ok(Self {
            head: part.head(),
            holder: identity.sign_public_key(),
            own: Some(OwnEntry {
                index: part.index(),
                entry: *part.unverified_entry(),
                proof: part.proof().to_vec(),
            }),
            key,
        })
    }

    /// Verifies and opens a history share addressed to `identity` for `room` at `epoch`, every
    /// check of `docs/protocol.md` §16.3 with `trusted_owner` (the room's pinned owner). The key
    /// opens and verifies the epoch's messages; sealing with it fails with
    /// [`EnvelopeError::ReadOnlyKey`].
    pub fn from_share(
        share: &HistoryShare,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_owner: &SignPublicKey,
    ) -> Result<Self, HistoryError> {
        let key = share.open(identity, room, epoch, trusted_owner)?;
        Ok(Self {
            head: share.unverified_head().clone(),
            holder: identity.sign_public_key(),
            own: None,
            key,
        })
    }

    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.header().room
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.header().epoch
    }

    /// The epoch's verified manifest header.
    pub fn header(&self) -> &ManifestHeader {
        self.head.unverified_header()
    }

    /// The epoch's verified signed head (header and signature): what a history share of the
    /// epoch carries (`docs/protocol.md` §16.2).
    pub fn head(&self) -> &SignedHead {
        &self.head
    }

    /// The member who opened it.
    pub fn member(&self) -> &SignPublicKey {
        &self.holder
    }

    /// The room key of this epoch.
    pub fn room_key(&self) -> &RoomKey {
        &self.key
    }

    /// Whether the holder is a recipient of the epoch's manifest, so it can send in the epoch;
    /// `false` for a key opened from a history share.
    pub fn can_send(&self) -> bool {
        self.own.is_some()
    }

    /// The member's leaf index in the epoch's manifest; `None` for a key opened from a history
    /// share.
    pub fn index(&self) -> Option<u32> {
        self.own.as_ref().map(|own| own.index)
    }

    /// The member's own entry in the epoch's manifest; `None` for a key opened from a history
    /// share.
    pub fn entry(&self) -> Option<&ManifestEntry> {
        self.own.as_ref().map(|own| &own.entry)
    }

    /// The audit path from the member's entry to the epoch's signed Merkle root, bottom first;
    /// `None` for a key opened from a history share.
    pub fn proof(&self) -> Option<&[Hash]> {
        self.own.as_ref().map(|own| own.proof.as_slice())
    }

    /// Replaces the room key: golden vectors and tests make envelopes under a wrong key.
    #[cfg(test)]
    pub(crate) fn set_room_key(&mut self, key: RoomKey) {
        self.key = key;
    }
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKey")
            .field("room", &self.header().room)
            .field("epoch", &self.header().epoch)
            .field("member", &self.holder)
            .field("can_send", &self.can_send())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A decoded envelope: its header's fields, readable without a key, and its bytes. Nothing in
/// it is verified until [`open`](Self::open) succeeds.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// [`SIGNING_CONTEXT`] followed by the wire form, so that the signed message is a prefix of
    /// one buffer and is neither copied to sign nor to verify.
    signed: Vec<u8>,
    header_len: usize,
    room: RoomId,
    epoch: u64,
    id: MessageId,
    sent_at: u64,
    content_type: ContentType,
    index: u32,
    entry: ManifestEntry,
    /// The sender's key (the entry's member key), decoded once when the envelope was.
    sender: DecodedSignKey,
    proof: Vec<Hash>,
}

impl Envelope {
    /// Encrypts and signs `body` as `sender`, with a fresh random [`MessageId`], for the room and
    /// epoch of `epoch_key`, which `sender` opened. `sent_at` is the sender's clock, in
    /// milliseconds since the Unix epoch.
    pub fn seal(
        sender: &Identity,
        epoch_key: &EpochKey,
        content_type: &ContentType,
        body: &[u8],
        sent_at: u64,
    ) -> Result<Self, EnvelopeError> {
        Self::seal_with_id(
            sender,
            epoch_key,
            MessageId::generate()?,
            content_type,
            body,
            sent_at,
        )
    }

    /// [`seal`](Self::seal) with the id given: for golden vectors and tests. An id MUST NOT be
    /// used twice by one sender: the message's key and nonce are derived from it.
    pub(crate) fn seal_with_id(
        sender: &Identity,
        epoch_key: &EpochKey,
        id: MessageId,
        content_type: &ContentType,
        body: &[u8],
        sent_at: u64,
    ) -> Result<Self, EnvelopeError> {
        if sender.sign_public_key() != epoch_key.holder {
            return Err(EnvelopeError::NotTheKeyHolder);
        }
        let own = epoch_key.own.as_ref().ok_or(EnvelopeError::ReadOnlyKey {
            epoch: epoch_key.header().epoch,
        })?;
        if body.len() > MAX_BODY_LEN {
            return Err(EnvelopeError::BodyTooLarge { len: body.len() });
        }
        if sent_at > MAX_SENT_AT {
            return Err(EnvelopeError::Malformed {
                reason: format!("sent_at {sent_at} is above 2^63 - 1"),
            });
        }
        let room = &epoch_key.header().room;
        let mut envelope = Self {
            signed: Vec::new(),
            header_len: 0,
            room: room.clone(),
            epoch: epoch_key.header().epoch,
            id,
            sent_at,
            content_type: content_type.clone(),
            index: own.index,
            entry: own.entry,
            sender: sender.decoded_sign_key(),
            proof: own.proof.clone(),
        };
        let mut bytes = Vec::with_capacity(
            CONTEXT_LEN
                + envelope_len(
                    room.as_str().len(),
                    content_type.0.len(),
                    envelope.proof.len(),
                    body.len(),
                ),
        );
        bytes.extend_from_slice(SIGNING_CONTEXT);
        envelope.write_header(&mut bytes, body.len());
        envelope.header_len = bytes.len() - CONTEXT_LEN;
        let (key, nonce) = message_key(
            &epoch_key.key,
            room,
            envelope.epoch,
            &envelope.entry.member,
            &id,
        );
        bytes.extend_from_slice(body);
        let cipher = cipher(&key);
        let (header, plaintext) = bytes[CONTEXT_LEN..].split_at_mut(envelope.header_len);
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), header, plaintext.into())
            // ChaCha20-Poly1305 refuses only messages of more than 2^38 bytes; a body is at most
            // MAX_BODY_LEN.
            .map_err(|_| EnvelopeError::BodyTooLarge { len: body.len() })?;
        bytes.extend_from_slice(&tag);
        let signature = sender.sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        envelope.signed = bytes;
        Ok(envelope)
    }

    /// Writes the header (everything before the ciphertext) for a body of `body_len` bytes.
    fn write_header(&self, out: &mut Vec<u8>, body_len: usize) {
        let room = self.room.as_str().as_bytes();
        out.push(ENVELOPE_VERSION);
        // A RoomId is at most 128 bytes, a content type at most 127, a path at most 20 hashes
        // and a body at most 64 KiB (all checked before this is called): the casts fit.
        out.extend_from_slice(&(room.len() as u16).to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.sent_at.to_be_bytes());
        out.push(self.content_type.0.len() as u8);
        out.extend_from_slice(self.content_type.0.as_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.entry.to_bytes());
        out.push(self.proof.len() as u8);
        for hash in &self.proof {
            out.extend_from_slice(hash);
        }
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
    }

    /// Decodes an envelope and checks its structure (`docs/protocol.md` §14.3). Neither the
    /// sender's proof nor the signature is checked here, and nothing is decrypted: call
    /// [`open`](Self::open).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { version });
        }
        let room_len = usize::from(reader.u16()?);
        let room = std::str::from_utf8(reader.take_slice(room_len)?)
            .ok()
            .and_then(|s| RoomId::new(s).ok())
            .ok_or_else(|| malformed("room id"))?;
        let epoch = reader.u64()?;
        if epoch == 0 || epoch > MAX_EPOCH {
            return Err(malformed(format!("epoch {epoch} is not 1 to 2^63 - 1")));
        }
        let id = MessageId(reader.take()?);
        let sent_at = reader.u64()?;
        if sent_at > MAX_SENT_AT {
            return Err(malformed(format!("sent_at {sent_at} is above 2^63 - 1")));
        }
        let content_type_len = usize::from(reader.u8()?);
        let content_type = std::str::from_utf8(reader.take_slice(content_type_len)?)
            .map_err(|_| EnvelopeError::ContentType)
            .and_then(ContentType::new)?;
        let index = reader.u32()?;
        let (entry, sender) =
            ManifestEntry::decode_with_point(&mut reader).map_err(|e| match e {
                ManifestError::Truncated => EnvelopeError::Truncated,
                other => malformed(format!("sender's entry: {other}")),
            })?;
        let proof_len = usize::from(reader.u8()?);
        if proof_len > MAX_PROOF_LEN {
            return Err(malformed(format!(
                "audit path of {proof_len} hashes; the limit is {MAX_PROOF_LEN}"
            )));
        }
        let proof = (0..proof_len)
            .map(|_| reader.take::<HASH_LEN>())
            .collect::<Result<Vec<_>, _>>()?;
        let body_len = reader.u32()? as usize;
        if body_len > MAX_BODY_LEN {
            return Err(EnvelopeError::BodyTooLarge { len: body_len });
        }
        let header_len = bytes.len() - reader.remaining();
        reader.expect_remaining(body_len + TAG_LEN + SIGNATURE_LEN)?;
        let mut signed = Vec::with_capacity(CONTEXT_LEN + bytes.len());
        signed.extend_from_slice(SIGNING_CONTEXT);
        signed.extend_from_slice(bytes);
        Ok(Self {
            signed,
            header_len,
            room,
            epoch,
            id,
            sent_at,
            content_type,
            index,
            entry,
            sender,
            proof,
        })
    }

    /// Checks everything but the body (`docs/protocol.md` §14.5, steps 1 to 3) against
    /// `header`, an epoch's manifest header that the caller trusts: the envelope is for the
    /// header's room and epoch (`WrongEpoch`), the sender's entry, leaf index and audit path lead
    /// to its signed Merkle root (`NotAMember`), and the signature verifies under the sender's
    /// key, in strict mode (`BadSignature`). Needs no room key: this is what a relay that stores
    /// envelopes checks (§15.2). Returns the sender.
    pub fn verify_sender(&self, header: &ManifestHeader) -> Result<&SignPublicKey, EnvelopeError> {
        if self.room != header.room || self.epoch != header.epoch {
            return Err(EnvelopeError::WrongEpoch {
                room: self.room.clone(),
                epoch: self.epoch,
            });
        }
        merkle::verify_inclusion(
            &self.entry.leaf_hash(),
            u64::from(self.index),
            u64::from(header.count),
            &self.proof,
            &header.merkle_root,
        )
        .map_err(EnvelopeError::NotAMember)?;
        let (signed, signature) = self.signed.split_at(self.signed.len() - SIGNATURE_LEN);
        let signature: [u8; SIGNATURE_LEN] =
            signature.try_into().expect("split SIGNATURE_LEN bytes off");
        self.sender
            .verify(signed, &Signature::from_bytes(signature))
            .map_err(|_| EnvelopeError::BadSignature)?;
        Ok(&self.entry.member)
    }

    /// Verifies the envelope and decrypts its body with `epoch_key`, in this order
    /// (`docs/protocol.md` §14.5): it is for the key's room and epoch (`WrongEpoch`); the
    /// sender's entry, leaf index and audit path lead to the epoch's signed Merkle root
    /// (`NotAMember`); the signature verifies under the sender's key, in strict mode
    /// (`BadSignature`); the body decrypts (`DecryptFailed`).
    pub fn open(&self, epoch_key: &EpochKey) -> Result<Message, EnvelopeError> {
        self.verify_sender(epoch_key.header())?;
        let signed = &self.signed[..self.signed.len() - SIGNATURE_LEN];
        let (key, nonce) = message_key(
            &epoch_key.key,
            &self.room,
            self.epoch,
            &self.entry.member,
            &self.id,
        );
        let (header, rest) = signed[CONTEXT_LEN..].split_at(self.header_len);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut body = ciphertext.to_vec();
        let tag: [u8; TAG_LEN] = tag.try_into().expect("split TAG_LEN bytes off");
        cipher(&key)
            .decrypt_inout_detached(
                &nonce.into(),
                header,
                body.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| EnvelopeError::DecryptFailed)?;
        Ok(Message {
            room: self.room.clone(),
            epoch: self.epoch,
            id: self.id,
            sender: self.entry.member,
            sent_at: self.sent_at,
            content_type: self.content_type.clone(),
            body,
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The wire form, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.signed[CONTEXT_LEN..]
    }

    /// The header: the bytes before the ciphertext, which the AEAD authenticates and the
    /// signature covers.
    pub fn header_bytes(&self) -> &[u8] {
        &self.as_bytes()[..self.header_len]
    }

    /// The room it is for.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The epoch whose key it is encrypted under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its id.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The sender it names, **unverified** until [`open`](Self::open) succeeds.
    pub fn sender(&self) -> &SignPublicKey {
        &self.entry.member
    }

    /// When its sender says it was sent (milliseconds since the Unix epoch, the sender's clock).
    pub fn sent_at(&self) -> u64 {
        self.sent_at
    }

    /// The content type its sender gave.
    pub fn content_type(&self) -> &ContentType {
        &self.content_type
    }

    /// The length of the encrypted body, in bytes.
    pub fn body_len(&self) -> usize {
        self.as_bytes().len() - self.header_len - TAG_LEN - SIGNATURE_LEN
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("room", &self.room)
            .field("epoch", &self.epoch)
            .field("id", &self.id)
            .field("sender", &self.entry.member)
            .field("content_type", &self.content_type)
            .field("bytes", &self.as_bytes().len())
            .finish()
    }
}

/// An opened message: verified and decrypted. `Debug` shows the body's length, not the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    room: RoomId,
    epoch: u64,
    id: MessageId,
    sender: SignPublicKey,
    sent_at: u64,
    content_type: ContentType,
    body: Vec<u8>,
}

impl Message {
    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The epoch it was encrypted under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its id, unique per sender and room.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// Who sent it: a member of the room at its epoch, proven by the epoch's manifest.
    pub fn sender(&self) -> &SignPublicKey {
        &self.sender
    }

    /// When its sender says it was sent (milliseconds since the Unix epoch, the sender's clock).
    pub fn sent_at(&self) -> u64 {
        self.sent_at
    }

    /// The content type its sender gave.
    pub fn content_type(&self) -> &ContentType {
        &self.content_type
    }

    /// The decrypted body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The decrypted body, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("room", &self.room)
            .field("epoch", &self.epoch)
            .field("id", &self.id)
            .field("sender", &self.sender)
            .field("content_type", &self.content_type)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// The AEAD for one message's key.
fn cipher(key: &[u8; MESSAGE_KEY_LEN]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&(*key).into())
}

fn malformed(reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed {
        reason: reason.into(),
    }
}

/// The HKDF `info` of a message's key: [`KEY_LABEL`] || u16 len(room) || room || u64 epoch ||
/// sender's ed25519 key.
pub(crate) fn key_info(room: &RoomId, epoch: u64, sender: &SignPublicKey) -> Vec<u8> {
    let room = room.as_str().as_bytes();
    let mut info = Vec::with_capacity(KEY_LABEL.len() + 2 + room.len() + 8 + 32);
    info.extend_from_slice(KEY_LABEL);
    // A RoomId is at most 128 bytes, so the cast fits.
    info.extend_from_slice(&(room.len() as u16).to_be_bytes());
    info.extend_from_slice(room);
    info.extend_from_slice(&epoch.to_be_bytes());
    info.extend_from_slice(sender.as_bytes());
    info
}

/// One message's AEAD key and nonce: HKDF-SHA256 with the message id as salt, the room key as
/// input keying material and [`key_info`] as info, 44 bytes: the key, then the nonce.
pub(crate) fn message_key(
    room_key: &RoomKey,
    room: &RoomId,
    epoch: u64,
    sender: &SignPublicKey,
    id: &MessageId,
) -> (zeroize::Zeroizing<[u8; MESSAGE_KEY_LEN]>, [u8; NONCE_LEN]) {
    let mut okm = zeroize::Zeroizing::new([0u8; MESSAGE_KEY_LEN + NONCE_LEN]);
    Hkdf::<Sha256>::new(Some(&id.0), room_key.expose_secret())
        .expand(&key_info(room, epoch, sender), okm.as_mut())
        .expect("44 bytes is far below HKDF-SHA256's limit of 255 * 32");
    let mut key = zeroize::Zeroizing::new([0u8; MESSAGE_KEY_LEN]);
    key.copy_from_slice(&okm[..MESSAGE_KEY_LEN]);
    let nonce: [u8; NONCE_LEN] = okm[MESSAGE_KEY_LEN..]
        .try_into()
        .expect("the rest of 44 bytes is 12");
    (key, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Recipient, SignedManifest};

    /// A room `general` at `epoch` whose manifest lists `members` (sealed for each under one
    /// fresh key), and each member's opened epoch key, in the order given.
    fn epoch_keys(owner: &Identity, members: &[&Identity], epoch: u64) -> Vec<EpochKey> {
        let room = RoomId::new("general").unwrap();
        let recipients: Vec<Recipient> = members.iter().map(|m| Recipient::of(m)).collect();
        let key = RoomKey::generate().unwrap();
        let manifest =
            SignedManifest::rekey(owner, &room, epoch, epoch - 1, &key, &recipients).unwrap();
        members
            .iter()
            .map(|m| {
                let part = manifest.member_part(&m.sign_public_key()).unwrap();
                EpochKey::open(&part, m, &room, epoch, &owner.sign_public_key()).unwrap()
            })
            .collect()
    }

    fn text() -> ContentType {
        ContentType::new("text/plain; charset=utf-8").unwrap()
    }

    struct Room {
        alice: Identity,
        bob: Identity,
        alice_key: EpochKey,
        bob_key: EpochKey,
    }

    fn room_of_five() -> Room {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let others: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let mut members = vec![&alice, &bob];
        members.extend(others.iter());
        let mut keys = epoch_keys(&alice, &members, 3).into_iter();
        Room {
            alice_key: keys.next().unwrap(),
            bob_key: keys.next().unwrap(),
            alice,
            bob,
        }
    }

    fn sealed(room: &Room, body: &[u8]) -> Vec<u8> {
        Envelope::seal(
            &room.alice,
            &room.alice_key,
            &text(),
            body,
            1_700_000_000_123,
        )
        .unwrap()
        .to_bytes()
    }

    #[test]
    fn a_sealed_message_opens_for_another_member_with_its_sender_and_fields() {
        let room = room_of_five();
        let wire = sealed(&room, b"hello, room");
        let envelope = Envelope::from_bytes(&wire).unwrap();
        let message = envelope.open(&room.bob_key).unwrap();
        assert_eq!(message.body(), b"hello, room");
        assert_eq!(message.sender(), &room.alice.sign_public_key());
        assert_eq!(message.room().as_str(), "general");
        assert_eq!(message.epoch(), 3);
        assert_eq!(message.sent_at(), 1_700_000_000_123);
        assert_eq!(message.content_type(), &text());
        assert_eq!(message.id(), envelope.id());
        // The sender reads its own messages too.
        assert_eq!(
            envelope.open(&room.alice_key).unwrap().body(),
            b"hello, room"
        );
        assert_eq!(
            wire.len(),
            envelope_len(
                7,
                text().as_str().len(),
                room.alice_key.proof().unwrap().len(),
                11
            )
        );
    }

    #[test]
    fn a_relay_checks_the_sender_against_the_epochs_header_alone() {
        let room = room_of_five();
        let wire = sealed(&room, b"hello");
        let envelope = Envelope::from_bytes(&wire).unwrap();
        // The epoch's header is all it needs: no room key.
        assert_eq!(
            envelope.verify_sender(room.bob_key.header()),
            Ok(&room.alice.sign_public_key())
        );
        // Another epoch's header, a flipped signature bit, another manifest's root.
        let other = epoch_keys(&room.alice, &[&room.alice], 4).remove(0);
        assert!(matches!(
            envelope.verify_sender(other.header()),
            Err(EnvelopeError::WrongEpoch { epoch: 3, .. })
        ));
        let mut flipped = wire.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            Envelope::from_bytes(&flipped)
                .unwrap()
                .verify_sender(room.bob_key.header()),
            Err(EnvelopeError::BadSignature)
        );
        let elsewhere = epoch_keys(&room.alice, &[&room.alice, &room.bob], 3).remove(0);
        assert!(matches!(
            envelope.verify_sender(elsewhere.header()),
            Err(EnvelopeError::NotAMember(_))
        ));
    }

    #[test]
    fn every_seal_has_a_fresh_id_and_ciphertext() {
        let room = room_of_five();
        let (a, b) = (sealed(&room, b"same"), sealed(&room, b"same"));
        let (a, b) = (
            Envelope::from_bytes(&a).unwrap(),
            Envelope::from_bytes(&b).unwrap(),
        );
        assert_ne!(a.id(), b.id());
        assert_ne!(a.as_bytes()[a.header_len..], b.as_bytes()[b.header_len..]);
    }

    #[test]
    fn empty_and_largest_bodies_round_trip_and_a_larger_one_is_refused() {
        let room = room_of_five();
        for len in [0, MAX_BODY_LEN] {
            let body = vec![0x5a; len];
            let wire = sealed(&room, &body);
            let opened = Envelope::from_bytes(&wire)
                .unwrap()
                .open(&room.bob_key)
                .unwrap();
            assert_eq!(opened.body(), &body[..]);
        }
        let too_large = vec![0; MAX_BODY_LEN + 1];
        assert_eq!(
            Envelope::seal(&room.alice, &room.alice_key, &text(), &too_large, 0),
            Err(EnvelopeError::BodyTooLarge {
                len: MAX_BODY_LEN + 1
            })
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused_with_the_reason_of_its_field() {
        let room = room_of_five();
        let wire = sealed(&room, b"do not touch");
        let envelope = Envelope::from_bytes(&wire).unwrap();
        let (n, t, k) = (7, text().as_str().len(), envelope.proof.len());
        // Where each field starts (docs/protocol.md §14.2).
        let (id, ct_len, ct) = (11 + n, 35 + n, 36 + n);
        let (index, entry, path_len) = (36 + n + t, 40 + n + t, 185 + n + t);
        let (path, body_len, ciphertext) =
            (path_len + 1, path_len + 1 + 32 * k, 190 + n + t + 32 * k);
        for i in 0..wire.len() {
            let mut bent = wire.clone();
            bent[i] ^= 0x01;
            let decoded = Envelope::from_bytes(&bent);
            let outcome = decoded.clone().and_then(|e| e.open(&room.bob_key));
            let err = outcome.expect_err("a flipped bit never opens");
            use EnvelopeError::*;
            let as_expected = match i {
                0 => matches!(err, UnsupportedVersion { .. }),
                // Lengths move every field after them: the envelope no longer decodes.
                1..=2 => decoded.is_err(),
                i if i == ct_len || i == path_len => decoded.is_err(),
                i if (3..3 + n).contains(&i) => matches!(err, Malformed { .. } | WrongEpoch { .. }),
                i if (3 + n..id).contains(&i) => matches!(err, WrongEpoch { .. }),
                i if (id..ct_len).contains(&i) => matches!(err, BadSignature),
                i if (ct..index).contains(&i) => matches!(err, BadSignature | ContentType),
                i if (index..entry).contains(&i) => matches!(err, NotAMember(_)),
                // A bent key may no longer be a valid key at all.
                i if (entry..path_len).contains(&i) => {
                    matches!(err, NotAMember(_) | Malformed { .. })
                }
                i if (path..body_len).contains(&i) => matches!(err, NotAMember(_)),
                i if (body_len..ciphertext).contains(&i) => {
                    matches!(err, Truncated | TrailingBytes { .. } | BodyTooLarge { .. })
                }
                _ => matches!(err, BadSignature),
            };
            assert!(as_expected, "byte {i}: {err:?}");
        }
    }

    #[test]
    fn a_message_opens_only_with_its_own_rooms_epoch_key() {
        let room = room_of_five();
        let wire = sealed(&room, b"epoch 3");
        let bob = &room.bob;
        let later = epoch_keys(&room.alice, &[&room.alice, bob], 4)
            .pop()
            .unwrap();
        assert_eq!(
            Envelope::from_bytes(&wire).unwrap().open(&later),
            Err(EnvelopeError::WrongEpoch {
                room: RoomId::new("general").unwrap(),
                epoch: 3
            })
        );
    }

    #[test]
    fn a_key_opened_from_a_history_share_reads_the_epoch_but_cannot_send_in_it() {
        let (alice, newcomer) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let room = RoomId::new("general").unwrap();
        let key = RoomKey::generate().unwrap();
        let manifest =
            SignedManifest::rekey(&alice, &room, 3, 2, &key, &[Recipient::of(&alice)]).unwrap();
        let owner = alice.sign_public_key();
        let part = manifest.member_part(&owner).unwrap();
        let alice_key = EpochKey::open(&part, &alice, &room, 3, &owner).unwrap();
        let share =
            HistoryShare::seal(&alice, &manifest.head(), &key, &Recipient::of(&newcomer)).unwrap();
        let shared = EpochKey::from_share(&share, &newcomer, &room, 3, &owner).unwrap();
        assert!(alice_key.can_send());
        assert!(!shared.can_send());
        assert_eq!(
            (shared.index(), shared.entry(), shared.proof()),
            (None, None, None)
        );
        assert_eq!(shared.member(), &newcomer.sign_public_key());
        let wire = Envelope::seal(&alice, &alice_key, &text(), b"earlier", 0)
            .unwrap()
            .to_bytes();
        let opened = Envelope::from_bytes(&wire).unwrap().open(&shared).unwrap();
        assert_eq!(opened.body(), b"earlier");
        assert_eq!(
            Envelope::seal(&newcomer, &shared, &text(), b"hi", 0).unwrap_err(),
            EnvelopeError::ReadOnlyKey { epoch: 3 }
        );
        assert!(format!("{shared:?}").contains("can_send: false"));
    }

    #[test]
    fn a_key_holder_outside_the_manifest_cannot_post() {
        // Mallory holds the room key (a leak, or a member since removed) and forges its own
        // entry and path for the epoch: its proof leads to another root.
        let room = room_of_five();
        let mallory = Identity::generate().unwrap();
        let mut forged = room.alice_key.clone();
        forged.holder = mallory.sign_public_key();
        let own = forged.own.as_mut().unwrap();
        own.entry = ManifestEntry {
            member: mallory.sign_public_key(),
            recipient: mallory.kex_public_key(),
            sealed: own.entry.sealed,
        };
        let wire = Envelope::seal(&mallory, &forged, &text(), b"let me in", 0)
            .unwrap()
            .to_bytes();
        assert!(matches!(
            Envelope::from_bytes(&wire).unwrap().open(&room.bob_key),
            Err(EnvelopeError::NotAMember(_))
        ));
    }

    #[test]
    fn a_members_proof_signed_by_another_key_is_a_bad_signature() {
        let room = room_of_five();
        let mallory = Identity::generate().unwrap();
        // Alice's entry and proof, Mallory's signature.
        let mut wire = sealed(&room, b"in alice's name");
        let signed_len = wire.len() - SIGNATURE_LEN;
        let signature = mallory.sign(&[SIGNING_CONTEXT, &wire[..signed_len]].concat());
        wire[signed_len..].copy_from_slice(&signature.to_bytes());
        assert_eq!(
            Envelope::from_bytes(&wire).unwrap().open(&room.bob_key),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn a_body_under_another_key_with_a_valid_signature_fails_to_decrypt() {
        let room = room_of_five();
        let mut wrong_key = room.alice_key.clone();
        wrong_key.key = RoomKey::generate().unwrap();
        let wire = Envelope::seal(&room.alice, &wrong_key, &text(), b"garbled", 0)
            .unwrap()
            .to_bytes();
        assert_eq!(
            Envelope::from_bytes(&wire).unwrap().open(&room.bob_key),
            Err(EnvelopeError::DecryptFailed)
        );
    }

    #[test]
    fn sealing_with_another_members_epoch_key_is_refused() {
        let room = room_of_five();
        assert_eq!(
            Envelope::seal(&room.bob, &room.alice_key, &text(), b"x", 0),
            Err(EnvelopeError::NotTheKeyHolder)
        );
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_a_typed_error() {
        let room = room_of_five();
        let wire = sealed(&room, b"cut me");
        for len in 0..wire.len() {
            assert_eq!(
                Envelope::from_bytes(&wire[..len]),
                Err(EnvelopeError::Truncated),
                "{len} bytes"
            );
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(
            Envelope::from_bytes(&longer),
            Err(EnvelopeError::TrailingBytes { extra: 1 })
        );
        let mut v2 = wire;
        v2[0] = 2;
        assert_eq!(
            Envelope::from_bytes(&v2),
            Err(EnvelopeError::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn content_types_are_one_to_127_printable_ascii_characters() {
        for good in ["a", "text/plain; charset=utf-8", &"x".repeat(127)] {
            assert_eq!(ContentType::new(good).unwrap().as_str(), good);
        }
        for bad in ["", &"x".repeat(128), "tab\there", "new\nline", "é"] {
            assert_eq!(ContentType::new(bad), Err(EnvelopeError::ContentType));
        }
    }

    #[test]
    fn message_ids_round_trip_as_lowercase_hex() {
        let id = MessageId::generate().unwrap();
        assert_eq!(id.to_hex().len(), 32);
        assert_eq!(MessageId::from_hex(&id.to_hex().to_uppercase()), Ok(id));
        assert_eq!(
            MessageId::from_hex("00"),
            Err(MessageIdError::WrongLength { actual: 2 })
        );
        assert_eq!(
            MessageId::from_hex(&format!("{}g", "0".repeat(31))),
            Err(MessageIdError::NotHex { position: 31 })
        );
    }

    #[test]
    fn debug_output_shows_no_body_and_no_key() {
        let room = room_of_five();
        let wire = sealed(&room, b"SECRET-BODY");
        let message = Envelope::from_bytes(&wire)
            .unwrap()
            .open(&room.bob_key)
            .unwrap();
        let key_hex = hex::encode(room.bob_key.room_key().expose_secret());
        for shown in [format!("{message:?}"), format!("{:?}", room.bob_key)] {
            assert!(
                !shown.contains("SECRET-BODY") && !shown.contains(&key_hex),
                "{shown}"
            );
        }
        assert!(format!("{message:?}").contains("<11 bytes>"));
    }
}
