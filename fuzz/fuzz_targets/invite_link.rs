//! Invite-link parsing: any text either parses or gets a typed error, never a panic, and a link
//! that parses prints back to text that parses to the same link.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus::InviteLink;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(link) = InviteLink::parse(text) {
        let again = InviteLink::parse(&link.to_string()).expect("a printed link parses");
        assert_eq!(again, link);
        if let Some(deep) = link.to_deep_link() {
            assert_eq!(InviteLink::parse(&deep).expect("a deep link parses"), link);
        }
    }
});
