//! `POST /register` bodies: the strict JSON reading, then every field's parse and the signature
//! check, as the server runs them. Nothing may panic; an accepted body must name valid keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::registration::RegisterRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = unibus::protocol::registration::RegisterBody::from_json(data) else {
        return;
    };
    if let Ok(request) = RegisterRequest::try_from(&body) {
        let _ = request.verify();
        assert_eq!(
            request.sign_public_key.to_hex(),
            body.sign_public_key.to_ascii_lowercase()
        );
    }
});
