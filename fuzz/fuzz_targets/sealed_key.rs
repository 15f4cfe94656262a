//! Sealed-key and manifest decoding: any bytes either decode or get a typed error, and whatever
//! decodes re-encodes to the same bytes (one encoding per value). The member parts cut from a
//! decoded manifest decode back to themselves. (`member_part` fuzzes the part decoder alone.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::manifest::{MemberPart, SignedManifest};
use unibus::sealing::SealedRoomKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedRoomKey::from_bytes(data) {
        assert_eq!(sealed.to_bytes().as_slice(), data);
    }
    if let Ok(manifest) = SignedManifest::from_bytes(data) {
        assert_eq!(manifest.to_bytes(), data);
        let _ = manifest.verify_signature();
        for part in manifest.member_parts() {
            assert_eq!(MemberPart::from_bytes(&part.to_bytes()), Ok(part));
        }
    }
});
