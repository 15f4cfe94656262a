//! `POST /status` bodies: the strict JSON reading, then the key's and the signature's parse and
//! the signature check, as the server runs them. Nothing may panic; an accepted body must name a
//! valid key and keep its timestamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::protocol::status::{StatusBody, StatusRequest};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = StatusBody::from_json(data) else {
        return;
    };
    if let Ok(request) = StatusRequest::try_from(&body) {
        let _ = request.verify();
        assert_eq!(
            request.sign_public_key.to_hex(),
            body.sign_public_key.to_ascii_lowercase()
        );
        assert_eq!(request.timestamp, body.timestamp);
    }
});
