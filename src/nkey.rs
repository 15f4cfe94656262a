//! The NATS nkey encoding of an ed25519 key, so a user logs in to the cluster with the same key
//! that identifies them.
//!
//! An nkey is RFC 4648 base32 (no padding) of `prefix || key || crc16`, where the CRC is
//! CRC-16/XMODEM in little-endian order. A user public key has prefix byte `20 << 3` and reads
//! `U...`; a user seed has the two prefix bytes of "seed of a user" and reads `SU...`.

use zeroize::Zeroizing;

const PREFIX_BYTE_SEED: u8 = 18 << 3;
const PREFIX_BYTE_USER: u8 = 20 << 3;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn base32_encode(data: &[u8], out: &mut String) {
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in data {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn encode_with_crc(raw: &mut Vec<u8>) -> String {
    let crc = crc16(raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    let mut out = String::with_capacity(raw.len() * 8 / 5 + 1);
    base32_encode(raw, &mut out);
    out
}

/// `U...`: the public nkey of a NATS user.
pub(crate) fn encode_user_public(key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(35);
    raw.push(PREFIX_BYTE_USER);
    raw.extend_from_slice(key);
    encode_with_crc(&mut raw)
}

/// `SU...`: the seed of a NATS user, which NATS clients sign connection nonces with.
pub(crate) fn encode_user_seed(seed: &[u8; 32]) -> Zeroizing<String> {
    let mut raw = Zeroizing::new(Vec::with_capacity(36));
    raw.push(PREFIX_BYTE_SEED | (PREFIX_BYTE_USER >> 5));
    raw.push((PREFIX_BYTE_USER & 31) << 3);
    raw.extend_from_slice(seed);
    Zeroizing::new(encode_with_crc(&mut raw))
}

/// Decodes a user public nkey. The error says what is wrong, without echoing the input.
pub(crate) fn decode_user_public(text: &str) -> Result<[u8; 32], &'static str> {
    if text.len() != 56 {
        return Err("expected 56 characters");
    }
    let raw = base32_decode(text).ok_or("not base32")?;
    let (body, crc) = raw.split_at(raw.len() - 2);
    if body[0] != PREFIX_BYTE_USER {
        return Err("not a user key (must start with U)");
    }
    if crc16(body).to_le_bytes() != crc {
        return Err("checksum mismatch");
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&body[1..]);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_xmodem_check_value() {
        // The standard CRC-16/XMODEM check value of "123456789".
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn decode_rejects_corruption_and_other_prefixes() {
        let good = encode_user_public(&[7; 32]);
        let mut chars: Vec<char> = good.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        let corrupt: String = chars.into_iter().collect();
        assert_eq!(decode_user_public(&corrupt), Err("checksum mismatch"));
        assert_eq!(decode_user_public(&good.to_lowercase()), Err("not base32"));
        let seed = encode_user_seed(&[7; 32]);
        assert!(decode_user_public(&seed[..56]).is_err());
    }
}
