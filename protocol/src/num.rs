//! Strict decimal numbers as they appear on the wire.
//!
//! The standard `str::parse` accepts a leading `+`, which the memcached text
//! protocol never sends; these helpers accept exactly `[0-9]+` (and `-[0-9]+`
//! for signed values), so that one byte string has one meaning.

/// Parses a non-empty run of ASCII digits as `u64`; `None` on anything else
/// (sign, space, empty) or on overflow.
pub(crate) fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// [`parse_u64`], narrowed to `usize`.
pub(crate) fn parse_usize(token: &[u8]) -> Option<usize> {
    parse_u64(token).and_then(|v| usize::try_from(v).ok())
}

/// [`parse_u64`], narrowed to `u32`.
pub(crate) fn parse_u32(token: &[u8]) -> Option<u32> {
    parse_u64(token).and_then(|v| u32::try_from(v).ok())
}

/// Parses `[-][0-9]+` as `i64` (including `i64::MIN`); `None` on anything
/// else or on overflow.
pub(crate) fn parse_i64(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let magnitude = parse_u64(digits)?;
    if negative {
        // -(2^63) is representable although +2^63 is not.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Writes `n` in decimal into the tail of `buf` and returns that tail.
pub(crate) fn format_usize(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_is_digits_only() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"007"), Some(7));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"1 ", b"1a", b"0x10"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_usize(b"16777216"), Some(16 << 20));
    }

    #[test]
    fn signed_allows_leading_minus() {
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"1700000000"), Some(1_700_000_000));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        for bad in [&b""[..], b"-", b"+5", b"--5", b"5-", b"1.5"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(format_usize(0, &mut buf), b"0");
        assert_eq!(format_usize(16, &mut buf), b"16");
        assert_eq!(
            format_usize(usize::MAX, &mut buf),
            usize::MAX.to_string().as_bytes()
        );
    }
}
