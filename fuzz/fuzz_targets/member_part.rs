//! Member-part decoding: any bytes either decode or get a typed error, whatever decodes
//! re-encodes to the same bytes (one encoding per value), and verifying never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::manifest::{merkle, MemberPart};

fuzz_target!(|data: &[u8]| {
    if let Ok(part) = MemberPart::from_bytes(data) {
        assert_eq!(part.to_bytes(), data);
        assert_eq!(part.encoded_len(), data.len());
        let header = part.unverified_header();
        let entry = part.unverified_entry();
        // Against its own claims: the signature check (which a fuzzer cannot forge) ...
        let _ = part.verify(&header.room, header.epoch, &header.rekeyer, &entry.member);
        // ... and the proof check behind it, reached directly.
        let _ = merkle::verify_inclusion(
            &entry.leaf_hash(),
            u64::from(part.index()),
            u64::from(header.count),
            part.proof(),
            &header.merkle_root,
        );
    }
});
