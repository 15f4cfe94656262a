//! The nats-server configuration and credentials for cluster login by key.
//!
//! Three accounts: `AUTH`, where membershipd connects (as an nkey user) to answer callouts and
//! to keep the KV store, out of reach of users; `APP`, where admitted users land; and `SYS`, the
//! system account, whose user membershipd uses to find and disconnect revoked users' sessions.
//! `APP` imports the control-plane service and the change notifications from `AUTH`.

use nkeys::KeyPair;
use zeroize::Zeroizing;

/// The account admitted users are placed in.
pub const APP_ACCOUNT: &str = "APP";
/// The account membershipd's own connection lives in.
pub const AUTH_ACCOUNT: &str = "AUTH";

/// The keys and passwords of one deployment. Secrets are wiped on drop and never printed.
pub struct AuthSetup {
    /// The account key that signs callout responses (the callout `issuer`).
    pub issuer: KeyPair,
    /// membershipd's own user nkey in the `AUTH` account.
    pub service: KeyPair,
    /// The password of the `sys` user in the system account.
    pub sys_password: Zeroizing<String>,
}

impl std::fmt::Debug for AuthSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSetup")
            .field("issuer", &self.issuer.public_key())
            .field("service", &self.service.public_key())
            .finish_non_exhaustive()
    }
}

impl AuthSetup {
    /// Fresh keys and password.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut password = [0u8; 24];
        getrandom::fill(&mut password)?;
        Ok(Self {
            issuer: KeyPair::new_account(),
            service: KeyPair::new_user(),
            sys_password: Zeroizing::new(hex::encode(password)),
        })
    }

    /// The `accounts`, `system_account` and `authorization` blocks for every node's config.
    pub fn server_config(&self) -> String {
        format!(
            r#"
accounts {{
  {AUTH_ACCOUNT} {{
    jetstream: enabled
    users: [ {{ nkey: {service} }} ]
    exports: [
      {{ service: "unibus.cp.>" }}
      {{ stream: "unibus.events.>" }}
    ]
  }}
  {APP_ACCOUNT} {{
    imports: [
      {{ service: {{ account: {AUTH_ACCOUNT}, subject: "unibus.cp.>" }} }}
      {{ stream: {{ account: {AUTH_ACCOUNT}, subject: "unibus.events.>" }} }}
    ]
  }}
  SYS {{ users: [ {{ user: sys, password: "{password}" }} ] }}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer}
    account: {AUTH_ACCOUNT}
    auth_users: [ {service} ]
    allowed_accounts: [ {APP_ACCOUNT} ]
  }}
}}
"#,
            service = self.service.public_key(),
            issuer = self.issuer.public_key(),
            password = self.sys_password.as_str(),
        )
    }
}
