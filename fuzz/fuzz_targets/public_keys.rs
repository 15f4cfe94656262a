//! Public-key parsing from hex and nkey text: typed errors only, and accepted keys round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::{KexPublicKey, SignPublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = SignPublicKey::from_hex(text) {
        assert_eq!(key.to_hex(), text.to_ascii_lowercase());
    }
    if let Ok(key) = KexPublicKey::from_hex(text) {
        assert_eq!(key.to_hex(), text.to_ascii_lowercase());
    }
    if let Ok(key) = SignPublicKey::from_nkey(text) {
        assert_eq!(key.to_nkey(), text);
    }
});
