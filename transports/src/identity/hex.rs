//! Small hex codec with the exact error information the identity types report.
//!
//! Hand-written (instead of the `hex` crate) so that we control the case policy per type and can
//! report the position of the first bad character, and so that encoding works into stack buffers.

/// Which letter case the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Only `0-9a-f` (canonical text form of public identifiers).
    Lower,
    /// `0-9a-f` and `A-F` (secret-key import, where there is no canonical-string concern).
    Any,
}

/// Why a hex string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexError {
    /// The string does not have `expected` characters.
    Length { expected: usize, got: usize },
    /// The character at `position` (0-based, in characters) is not an accepted hex digit.
    Char { position: usize, found: char },
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: char, case: Case) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        'a'..='f' => Some(c as u8 - b'a' + 10),
        'A'..='F' if case == Case::Any => Some(c as u8 - b'A' + 10),
        _ => None,
    }
}

/// Decodes `s` into `out`, which must be filled completely (`s` has `2 * out.len()` characters).
///
/// On error `out` may be partially written; callers holding secrets pass a zeroizing buffer.
pub(crate) fn decode_into(s: &str, out: &mut [u8], case: Case) -> Result<(), HexError> {
    let expected = out.len() * 2;
    // Lengths are counted in characters, so a multi-byte character counts once.
    let got = if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    };
    if got != expected {
        return Err(HexError::Length { expected, got });
    }
    for (position, c) in s.chars().enumerate() {
        let Some(n) = nibble(c, case) else {
            return Err(HexError::Char { position, found: c });
        };
        // `position < expected` because the string has exactly `expected` characters.
        let byte = &mut out[position / 2];
        *byte = if position % 2 == 0 { n << 4 } else { *byte | n };
    }
    Ok(())
}

/// Writes the lowercase hex encoding of `bytes` into `out` (`out.len() == 2 * bytes.len()`).
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Formats `bytes` as lowercase hex through `f` (respecting width/fill via `pad`), without
/// allocating. `N` is the encoded length (`2 * bytes.len()`).
pub(crate) fn fmt_lower<const N: usize>(
    bytes: &[u8],
    f: &mut core::fmt::Formatter<'_>,
) -> core::fmt::Result {
    let mut buf = [0u8; N];
    encode_into(bytes, &mut buf);
    let s = core::str::from_utf8(&buf).map_err(|_| core::fmt::Error)?;
    f.pad(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reports_length_in_characters_and_first_bad_char() {
        let mut out = [0u8; 2];
        assert_eq!(
            decode_into("abc", &mut out, Case::Lower),
            Err(HexError::Length {
                expected: 4,
                got: 3
            })
        );
        // 4 bytes but only 3 characters: the length is reported in characters.
        assert_eq!(
            decode_into("aé1", &mut out, Case::Lower),
            Err(HexError::Length {
                expected: 4,
                got: 3
            })
        );
        // 4 characters, 5 bytes: the scan reports the multi-byte char and its char position.
        assert_eq!(
            decode_into("a\u{e9}12", &mut out, Case::Lower),
            Err(HexError::Char {
                position: 1,
                found: 'é'
            })
        );
        assert_eq!(
            decode_into("00Ff", &mut out, Case::Lower),
            Err(HexError::Char {
                position: 2,
                found: 'F'
            })
        );
        assert_eq!(decode_into("00Ff", &mut out, Case::Any), Ok(()));
        assert_eq!(out, [0x00, 0xff]);
    }

    #[test]
    fn encode_decode_round_trip_all_byte_values() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut text = vec![0u8; 512];
        encode_into(&bytes, &mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text, text.to_lowercase());
        assert!(text.starts_with("000102"));
        let mut back = vec![0u8; 256];
        decode_into(&text, &mut back, Case::Lower).unwrap();
        assert_eq!(back, bytes);
    }
}
