//! Inline commands: one line of space-separated arguments, as Redis accepts
//! them from telnet and `redis-cli` (its `sdssplitargs` rules, re-stated
//! from the observed behaviour of Redis 7).
//!
//! - Arguments are separated by runs of blanks (space, tab, CR, LF, VT, FF);
//!   a NUL byte ends the line.
//! - An unquoted argument ends at a space, tab, CR or LF (not at VT or FF,
//!   which stay part of it). A `"` or `'` inside it opens a quoted part that
//!   continues the same argument (`a"b c"` is `ab c`).
//! - In `"..."`: `\xHH` (two hex digits) is that byte; `\n`, `\r`, `\t`,
//!   `\b`, `\a` are the control characters; `\` before anything else is that
//!   character. In `'...'`: only `\'` is an escape.
//! - A closing quote must be followed by a blank or the end of the line, and
//!   every quote must be closed; otherwise the line is refused
//!   ([`Unbalanced`]), which Redis answers with `Protocol error: unbalanced
//!   quotes in request` and a close.

use bytes::Bytes;

/// A quote left open, or a closing quote followed by something other than a
/// blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unbalanced;

/// Blanks skipped between arguments (C's `isspace`).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits one inline command line (without its line end) into arguments.
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, Unbalanced> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let (arg, next) = one_argument(line, i)?;
        args.push(Bytes::from(arg));
        i = next;
    }
}

/// Where the argument being read is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Reads the argument starting at `line[start]` (not a blank); returns it
/// and the index just after it.
fn one_argument(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), Unbalanced> {
    let mut arg = Vec::new();
    let mut quote = Quote::None;
    let mut i = start;
    loop {
        let Some(&b) = line.get(i) else {
            return match quote {
                Quote::None => Ok((arg, i)),
                _ => Err(Unbalanced),
            };
        };
        match quote {
            Quote::None => match b {
                b' ' | b'\t' | b'\r' | b'\n' => return Ok((arg, i + 1)),
                b'"' => quote = Quote::Double,
                b'\'' => quote = Quote::Single,
                _ => arg.push(b),
            },
            Quote::Double => match (b, line.get(i + 1).copied()) {
                (b'\\', Some(b'x'))
                    if line.len() > i + 3
                        && line[i + 2].is_ascii_hexdigit()
                        && line[i + 3].is_ascii_hexdigit() =>
                {
                    arg.push((hex(line[i + 2]) << 4) | hex(line[i + 3]));
                    i += 3;
                }
                (b'\\', Some(escaped)) => {
                    arg.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 1;
                }
                (b'"', after) => return closed(arg, i, after),
                _ => arg.push(b),
            },
            Quote::Single => match (b, line.get(i + 1).copied()) {
                (b'\\', Some(b'\'')) => {
                    arg.push(b'\'');
                    i += 1;
                }
                (b'\'', after) => return closed(arg, i, after),
                _ => arg.push(b),
            },
        }
        i += 1;
    }
}

/// A closing quote at `line[at]`: the argument ends if a blank or the end
/// of the line follows.
fn closed(arg: Vec<u8>, at: usize, after: Option<u8>) -> Result<(Vec<u8>, usize), Unbalanced> {
    match after {
        Some(b) if !is_blank(b) => Err(Unbalanced),
        _ => Ok((arg, at + 1)),
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, Unbalanced> {
        split_inline(line).map(|args| args.iter().map(|a| a.to_vec()).collect())
    }

    fn ok(line: &[u8], want: &[&[u8]]) {
        let want: Vec<Vec<u8>> = want.iter().map(|a| a.to_vec()).collect();
        assert_eq!(split(line), Ok(want), "{:?}", String::from_utf8_lossy(line));
    }

    #[test]
    fn blanks_separate_arguments() {
        ok(b"PING", &[b"PING"]);
        ok(b" PING ", &[b"PING"]);
        ok(b"a\tb  c\r", &[b"a", b"b", b"c"]);
        ok(b"", &[]);
        ok(b"   ", &[]);
        // VT and FF separate only between arguments, not inside one.
        ok(b"PING \x0bx", &[b"PING", b"x"]);
        ok(b"PING\x0c", &[b"PING\x0c"]);
    }

    #[test]
    fn nul_ends_the_line() {
        ok(b"\x00PING", &[]);
        ok(b"PING a\x00b", &[b"PING", b"a"]);
    }

    #[test]
    fn quotes_and_escapes() {
        ok(b"PING \"a b\"", &[b"PING", b"a b"]);
        ok(b"PING \"\\x41\\n\"", &[b"PING", b"A\n"]);
        ok(b"PING \"\\q\\\"x\"", &[b"PING", b"q\"x"]);
        ok(b"PING 'a\\'b' \"c\\x4\"", &[b"PING", b"a'b", b"cx4"]);
        ok(b"PING \"a\"\tb", &[b"PING", b"a", b"b"]);
        ok(b"PING \"\"", &[b"PING", b""]);
        ok(b"a\"b c\"", &[b"ab c"]);
        ok(b"'\\n'", &[b"\\n"]);
        ok(b"\"\\xfF\"", &[b"\xff"]);
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        for line in [
            &b"PING \"a"[..],
            b"PING 'x",
            b"PING a\"b",
            b"PING \"a\"b",
            b"'a'b",
            b"\"\\",
            b"\"a\\\"",
        ] {
            assert_eq!(split(line), Err(Unbalanced), "{line:?}");
        }
    }
}
