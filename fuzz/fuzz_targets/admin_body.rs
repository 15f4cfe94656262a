//! `POST /admin` bodies: the strict JSON reading of the envelope, the admin key and the
//! operation with its params (`unibus::protocol::admin`), as the server reads them before it
//! touches the store. Nothing may panic, whatever the numbers or nesting; an accepted invite
//! lifetime is within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::protocol::admin::{AdminOperation, TTL_HOURS};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = unibus::protocol::admin::AdminBody::from_json(data) else {
        return;
    };
    let _ = unibus::SignPublicKey::from_hex(&body.admin);
    if let Ok(AdminOperation::InviteCreate { ttl_hours, .. }) =
        AdminOperation::from_json(&body.operation, body.params)
    {
        assert!(TTL_HOURS.contains(&ttl_hours));
    }
});
