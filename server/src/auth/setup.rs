//! The nats-server configuration and credentials for cluster login by key.
//!
//! Three accounts: `AUTH`, where membershipd connects (as an nkey user) to answer callouts and
//! to keep the KV store, out of reach of users; `APP`, where admitted users land, and where
//! membershipd's control-plane user answers their requests and keeps the message stream
//! (JetStream is enabled there for it; users' permissions give them no JetStream subject); and
//! `SYS`, the system account, whose user membershipd uses to find and disconnect revoked users'
//! sessions. `APP` imports the change
//! notifications from `AUTH`.
//!
//! The control plane answers in `APP` itself, not through a service import: an import hands the
//! service a reply subject of nats-server's own making (`_R_.…`), so membershipd could not see
//! where its answer would go, and a caller could have it sent to another user's inbox or notice
//! subjects. In `APP` it sees the caller's own reply subject and answers only under the caller's
//! inbox prefix (see [`crate::control`]).

use std::time::Duration;

use nkeys::KeyPair;
use zeroize::Zeroizing;

/// The account admitted users are placed in.
pub const APP_ACCOUNT: &str = "APP";
/// The account membershipd's own connection lives in.
pub const AUTH_ACCOUNT: &str = "AUTH";

/// nats-server's authentication timeout in the config membershipd writes: how long a login may
/// wait for the callout's answer. Long on purpose: every attempt costs nats-server about as much
/// as an admission (it signs the request and checks the answer), so under a storm a login that
/// waits its turn is far cheaper than one refused and retried.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys and passwords of one deployment. Secrets are wiped on drop and never printed.
pub struct AuthSetup {
    /// The account key that signs callout responses (the callout `issuer`).
    pub issuer: KeyPair,
    /// membershipd's own user nkey in the `AUTH` account.
    pub service: KeyPair,
    /// membershipd's control-plane user nkey in the `APP` account, derived from
    /// [`service`](Self::service) (see [`control_key`]).
    pub control: KeyPair,
    /// The password of the `sys` user in the system account.
    pub sys_password: Zeroizing<String>,
}

impl std::fmt::Debug for AuthSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSetup")
            .field("issuer", &self.issuer.public_key())
            .field("service", &self.service.public_key())
            .field("control", &self.control.public_key())
            .finish_non_exhaustive()
    }
}

/// The files an [`AuthSetup`] is kept in, under `<data-dir>/auth/`.
const ISSUER_FILE: &str = "issuer.nk";
const SERVICE_FILE: &str = "service.nk";
const SYS_PASSWORD_FILE: &str = "sys.password";

impl AuthSetup {
    /// Loads the setup kept in `dir`, if there is one.
    pub fn load(dir: &std::path::Path) -> std::io::Result<Option<Self>> {
        if !dir.join(ISSUER_FILE).exists() {
            return Ok(None);
        }
        let read = |name: &str| -> std::io::Result<Zeroizing<String>> {
            Ok(Zeroizing::new(
                std::fs::read_to_string(dir.join(name))?.trim().to_string(),
            ))
        };
        let key = |name: &str| -> std::io::Result<KeyPair> {
            KeyPair::from_seed(&read(name)?)
                .map_err(|e| std::io::Error::other(format!("{name}: {e}")))
        };
        let service = key(SERVICE_FILE)?;
        Ok(Some(Self {
            issuer: key(ISSUER_FILE)?,
            control: control_key(&service)
                .map_err(|e| std::io::Error::other(format!("{SERVICE_FILE}: {e}")))?,
            service,
            sys_password: read(SYS_PASSWORD_FILE)?,
        }))
    }

    /// Loads the setup kept in `dir`, creating it (files readable by the owner only) the first
    /// time.
    pub fn load_or_create(dir: &std::path::Path) -> std::io::Result<Self> {
        if let Some(setup) = Self::load(dir)? {
            return Ok(setup);
        }
        let setup = Self::generate().map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(dir)?;
        let seed = |kp: &KeyPair| -> std::io::Result<Zeroizing<String>> {
            kp.seed()
                .map(Zeroizing::new)
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        write_secret(&dir.join(ISSUER_FILE), &seed(&setup.issuer)?)?;
        write_secret(&dir.join(SERVICE_FILE), &seed(&setup.service)?)?;
        write_secret(&dir.join(SYS_PASSWORD_FILE), &setup.sys_password)?;
        Ok(setup)
    }

    /// Fresh keys and password.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut password = [0u8; 24];
        getrandom::fill(&mut password)?;
        let service = KeyPair::new_user();
        Ok(Self {
            issuer: KeyPair::new_account(),
            // A fresh user key's seed always encodes, and the derived bytes always make a key.
            control: control_key(&service).expect("a fresh user key derives its control key"),
            service,
            sys_password: Zeroizing::new(hex::encode(password)),
        })
    }

    /// The `accounts`, `system_account` and `authorization` blocks for every node's config,
    /// with the authentication timeout [`AUTH_TIMEOUT`].
    pub fn server_config(&self) -> String {
        self.server_config_with(AUTH_TIMEOUT)
    }

    /// The same blocks with another authentication timeout (the embedded nats-server starts
    /// with a short one until the callout listens).
    pub fn server_config_with(&self, auth_timeout: Duration) -> String {
        format!(
            r#"
accounts {{
  {AUTH_ACCOUNT} {{
    jetstream: enabled
    users: [ {{ nkey: {service} }} ]
    exports: [
      {{ stream: "unibus.events.>" }}
    ]
  }}
  {APP_ACCOUNT} {{
    jetstream: enabled
    users: [ {{ nkey: {control}, permissions: {permissions} }} ]
    imports: [
      {{ stream: {{ account: {AUTH_ACCOUNT}, subject: "unibus.events.>" }} }}
    ]
  }}
  SYS {{ users: [ {{ user: sys, password: "{password}" }} ] }}
}}
system_account: SYS
authorization {{
  timeout: {timeout}
  auth_callout {{
    issuer: {issuer}
    account: {AUTH_ACCOUNT}
    auth_users: [ {service}, {control} ]
    allowed_accounts: [ {APP_ACCOUNT} ]
  }}
}}
"#,
            service = self.service.public_key(),
            control = self.control.public_key(),
            permissions = control_permissions(),
            issuer = self.issuer.public_key(),
            timeout = auth_timeout.as_secs_f64(),
            password = self.sys_password.as_str(),
        )
    }
}

/// What membershipd's control-plane user may do in `APP`, and nothing more: answer the
/// control-plane requests it receives (only to their reply subjects, once each:
/// `allow_responses`), publish change notifications and live copies (`unibus.events.>`), store
/// envelopes (`unibus.msg.>`), set up and read the message stream (its own JetStream API
/// subjects, answered on its `_INBOX.` inboxes), and take the stream's republished copies
/// (`unibus.live.>`) and the micro-services discovery requests (`$SRV.>`, which an operator
/// with these credentials may also send: `nats micro stats`).
pub fn control_permissions() -> String {
    use unibus::protocol::messages::{LIVE_PREFIX, STORE_PREFIX, STREAM};
    format!(
        r#"{{
      publish: {{ allow: [ "unibus.events.>", "{STORE_PREFIX}.>", "$JS.API.STREAM.CREATE.{STREAM}", "$JS.API.STREAM.UPDATE.{STREAM}", "$JS.API.STREAM.INFO.{STREAM}", "$JS.API.DIRECT.GET.{STREAM}", "$SRV.>" ] }}
      subscribe: {{ allow: [ "unibus.cp.>", "{LIVE_PREFIX}.>", "$SRV.>", "_INBOX.>" ] }}
      allow_responses: true
    }}"#
    )
}

/// The control-plane user's key, derived from the service user's: SHA-256 of a label and the
/// service seed. Every instance that carries the same `auth/` directory derives the same key, and
/// a directory made before the control plane moved to `APP` needs no new file. The hash is one
/// way: the control key's seed does not reveal the service seed.
pub fn control_key(service: &KeyPair) -> Result<KeyPair, nkeys::error::Error> {
    use sha2::Digest;
    let seed = Zeroizing::new(service.seed()?);
    let mut hash = sha2::Sha256::new();
    hash.update(b"unibus control-plane user v1\0");
    hash.update(seed.as_bytes());
    let mut raw = Zeroizing::new([0u8; 32]);
    raw.copy_from_slice(&hash.finalize());
    KeyPair::new_from_raw(nkeys::KeyPairType::User, *raw)
}

/// Writes (or rewrites) a file only its owner can read.
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    // An existing file keeps its old mode through open(): set it explicitly.
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_is_created_once_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let first = AuthSetup::load_or_create(dir.path()).unwrap();
        let again = AuthSetup::load_or_create(dir.path()).unwrap();
        assert_eq!(first.issuer.public_key(), again.issuer.public_key());
        assert_eq!(first.service.public_key(), again.service.public_key());
        assert_eq!(first.control.public_key(), again.control.public_key());
        assert_ne!(first.control.public_key(), first.service.public_key());
        assert_eq!(*first.sys_password, *again.sys_password);
        assert!(!format!("{first:?}").contains(first.sys_password.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ISSUER_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
