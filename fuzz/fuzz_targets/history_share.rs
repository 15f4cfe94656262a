//! History-share decoding: any bytes either decode or get a typed error, whatever decodes
//! re-encodes to the same bytes (one encoding per value), and verifying never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::history::HistoryShare;

fuzz_target!(|data: &[u8]| {
    if let Ok(share) = HistoryShare::from_bytes(data) {
        assert_eq!(share.to_bytes(), data);
        assert_eq!(share.encoded_len(), data.len());
        let header = share.unverified_head().unverified_header();
        let entry = share.unverified_entry();
        // Against its own claims: the signatures (which a fuzzer cannot forge) ...
        let _ = share.verify(&header.room, header.epoch, &header.rekeyer, &entry.member);
        // ... and as a server checks it.
        let _ = share.verify_signatures();
    }
});
