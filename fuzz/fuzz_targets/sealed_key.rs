//! Sealed-key and manifest decoding: any bytes either decode or get a typed error, and whatever
//! decodes re-encodes to the same bytes (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::manifest::SignedManifest;
use unibus::sealing::SealedRoomKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedRoomKey::from_bytes(data) {
        assert_eq!(sealed.to_bytes().as_slice(), data);
    }
    if let Ok(manifest) = SignedManifest::from_bytes(data) {
        assert_eq!(manifest.to_bytes(), data);
        let _ = manifest.verify_signature();
    }
});
