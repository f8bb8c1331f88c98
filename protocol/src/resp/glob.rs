//! Redis's glob patterns, for `PUBSUB CHANNELS <pattern>`: `*` (any run),
//! `?` (any byte), `[abc]`, `[^abc]`, `[a-z]` (ranges either way round),
//! and `\x` (a literal `x`), matched byte by byte, case-sensitively.

/// Whether `text` matches the glob `pattern`.
///
/// Iterative, with one backtrack point for the last `*` seen, so it runs in
/// `O(len(pattern) * len(text))` time whatever the pattern (no exponential
/// blow-up on `*a*a*a*b`).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if let Some(step) = match_one(pattern, p, text[t]) {
            p = step;
            t += 1;
            continue;
        }
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// If the pattern element at `p` (not a `*`) matches `byte`, the index of
/// the next element.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match *pattern.get(p)? {
        b'*' => None,
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            // An unclosed class runs to the end of the pattern.
            while i < pattern.len() && pattern[i] != b']' {
                if pattern[i] == b'\\' && i + 1 < pattern.len() {
                    hit |= pattern[i + 1] == byte;
                    i += 2;
                } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']'
                {
                    let (lo, hi) = (
                        pattern[i].min(pattern[i + 2]),
                        pattern[i].max(pattern[i + 2]),
                    );
                    hit |= (lo..=hi).contains(&byte);
                    i += 3;
                } else {
                    hit |= pattern[i] == byte;
                    i += 1;
                }
            }
            let next = (i + 1).min(pattern.len());
            (hit != negate).then_some(next)
        }
        literal => (literal == byte).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        for (pattern, text, want) in [
            (&b"*"[..], &b""[..], true),
            (b"*", b"abc", true),
            (b"a*", b"abc", true),
            (b"a*", b"bac", false),
            (b"a?c", b"abc", true),
            (b"a?c", b"ac", false),
            (b"*b*", b"abc", true),
            (b"[ab]c", b"bc", true),
            (b"[^ab]c", b"bc", false),
            (b"[^ab]c", b"xc", true),
            (b"[a-c]", b"b", true),
            (b"[c-a]", b"b", true),
            (b"[a-c]", b"d", false),
            (b"a\\*", b"a*", true),
            (b"a\\*", b"ab", false),
            (b"", b"", true),
            (b"", b"a", false),
            (
                b"*a*a*a*b",
                b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            (b"news.*", b"news.tech", true),
        ] {
            assert_eq!(
                glob_match(pattern, text),
                want,
                "{:?} {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(text)
            );
        }
    }
}
