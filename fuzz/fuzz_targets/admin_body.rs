//! `POST /admin` bodies: the strict JSON reading of the envelope, the admin key and the
//! operation with its params, as the server runs them before touching the store. Nothing may
//! panic, whatever the numbers or nesting; an accepted invite lifetime is within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus_server::admin::{Operation, TTL_HOURS};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = unibus::protocol::admin::AdminBody::from_json(data) else {
        return;
    };
    let _ = unibus::SignPublicKey::from_hex(&body.admin);
    if let Ok(Operation::InviteCreate { ttl_hours, .. }) =
        Operation::from_json(&body.operation, body.params)
    {
        assert!(TTL_HOURS.contains(&ttl_hours));
    }
});
