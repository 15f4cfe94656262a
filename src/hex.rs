//! Lowercase hex encoding and strict decoding, shared by keys, tokens and signatures.
//!
//! Decoding accepts either case and reports where the first bad character is, so callers can
//! build errors that say what is wrong without echoing the (possibly secret) input.

/// Why a hex string did not decode into `N` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexError {
    /// The string is not `2 * N` characters long.
    Length { actual: usize },
    /// The character at this byte offset is not `0-9`, `a-f` or `A-F`.
    Character { position: usize },
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes `bytes` as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `N` bytes from `2 * N` hex characters of either case.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        let chars = text.chars().count();
        if chars == N * 2 {
            // The right number of characters, but some are multi-byte: name the first byte
            // that is not a hex digit (a multi-byte character never is).
            let position = raw.iter().position(|b| nibble(*b).is_none()).unwrap_or(0);
            return Err(HexError::Character { position });
        }
        return Err(HexError::Length { actual: chars });
    }
    let mut out = [0u8; N];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Character { position: 2 * i })?;
        let lo = nibble(pair[1]).ok_or(HexError::Character {
            position: 2 * i + 1,
        })?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

/// Decodes any even number of hex characters of either case.
#[cfg(test)]
pub(crate) fn decode_vec(text: &str) -> Result<Vec<u8>, HexError> {
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return Err(HexError::Length {
            actual: text.chars().count(),
        });
    }
    raw.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let hi = nibble(pair[0]).ok_or(HexError::Character { position: 2 * i })?;
            let lo = nibble(pair[1]).ok_or(HexError::Character {
                position: 2 * i + 1,
            })?;
            Ok((hi << 4) | lo)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lowercases() {
        let bytes = [0x00, 0xab, 0xff, 0x10];
        assert_eq!(encode(&bytes), "00abff10");
        assert_eq!(decode_array::<4>("00ABfF10"), Ok(bytes));
        assert_eq!(decode_vec("00ABfF10"), Ok(bytes.to_vec()));
    }

    #[test]
    fn reports_length_in_characters_and_first_bad_position() {
        assert_eq!(
            decode_array::<2>("abc"),
            Err(HexError::Length { actual: 3 })
        );
        // A multi-byte character that makes the byte length right is still not hex.
        assert_eq!(
            decode_array::<2>("ab\u{e9}"),
            Err(HexError::Character { position: 2 })
        );
        assert_eq!(
            decode_array::<2>("ab\u{e9}z"),
            Err(HexError::Character { position: 2 })
        );
        assert_eq!(
            decode_array::<2>("z\u{e9}b"),
            Err(HexError::Character { position: 0 })
        );
        assert_eq!(
            decode_array::<2>("abxz"),
            Err(HexError::Character { position: 2 })
        );
    }
}
