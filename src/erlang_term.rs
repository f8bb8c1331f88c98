//! A parser for the subset of Erlang term syntax that the original Kraken's
//! config files use (`erl -config FILE`, the `sys.config` format):
//!
//! ```erlang
//! %% /etc/kraken.config
//! [{kraken, [{num_router_shards, 8},
//!            {pid_file, "/var/run/kraken.pid"},
//!            {listen_ip, {127,0,0,1}}]},
//!  {kernel, [...]}].
//! ```
//!
//! Understood: lists (with a proper `| Tail`), tuples, atoms (bare and
//! `'quoted'`), integers (negative, `16#ff`, `$c`, `1_000`), floats,
//! double-quoted strings with Erlang's escapes (adjacent strings
//! concatenate), binaries of strings and bytes (`<<"x">>`, `<<"é"/utf8>>`,
//! `<<1,2>>`), `%` comments and the final `.`. Anything else (variables,
//! maps, funs, expressions) is an error that names the line and column.
//!
//! The parser never panics and bounds its recursion, whatever the input;
//! `proptest` checks that below.

use std::fmt;

/// Deepest nesting of lists, tuples and binaries accepted: real config
/// files nest 3 or 4 deep; the bound keeps hostile input off the stack.
const MAX_DEPTH: u32 = 100;

/// A place in the text, both counted from 1; columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// A syntax error, or a structural one (a config file that is not a list
/// of `{Application, [{Option, Value}]}`), at a place in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.pos.line, self.pos.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// A parsed term and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub value: TermValue,
    pub pos: Pos,
}

/// The kinds of term the subset has.
#[derive(Debug, Clone, PartialEq)]
pub enum TermValue {
    /// Erlang integers are unbounded; config values fit in 128 bits.
    Integer(i128),
    Float(f64),
    Atom(String),
    /// A `"string"`. Erlang strings are lists of character codes; kept apart
    /// from `List` here because every option that takes one wants text.
    String(String),
    Binary(Vec<u8>),
    List(Vec<Term>),
    Tuple(Vec<Term>),
}

impl fmt::Display for Term {
    /// Writes the term back in Erlang syntax (for messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            TermValue::Integer(i) => write!(f, "{i}"),
            TermValue::Float(x) => {
                // Erlang wants a digit on both sides of the point: 1.0e20.
                let text = format!("{x:?}");
                match text.split_once('e') {
                    Some((mantissa, exp)) if !mantissa.contains('.') => {
                        write!(f, "{mantissa}.0e{exp}")
                    }
                    _ => f.write_str(&text),
                }
            }
            TermValue::Atom(a) => write_atom(f, a),
            TermValue::String(s) => write_quoted(f, s, '"'),
            TermValue::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => {
                    f.write_str("<<")?;
                    write_quoted(f, s, '"')?;
                    f.write_str(if s.is_ascii() { ">>" } else { "/utf8>>" })
                }
                Err(_) => {
                    f.write_str("<<")?;
                    for (i, byte) in b.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{byte}")?;
                    }
                    f.write_str(">>")
                }
            },
            TermValue::List(items) => write_seq(f, "[", items, "]"),
            TermValue::Tuple(items) => write_seq(f, "{", items, "}"),
        }
    }
}

fn write_seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Term], close: &str) -> fmt::Result {
    f.write_str(open)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(close)
}

fn write_atom(f: &mut fmt::Formatter<'_>, a: &str) -> fmt::Result {
    let mut chars = a.chars();
    let bare = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    if bare {
        f.write_str(a)
    } else {
        write_quoted(f, a, '\'')
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str, quote: char) -> fmt::Result {
    use fmt::Write;
    f.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if (c as u32) < 32 || c as u32 == 127 => write!(f, "\\x{{{:X}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char(quote)
}

impl Term {
    /// The atom's name, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match &self.value {
            TermValue::Atom(a) => Some(a),
            _ => None,
        }
    }
}

/// Parses a whole config file: exactly one term, then `.`, then nothing but
/// whitespace and comments.
pub fn parse_file(text: &str) -> Result<Term, ParseError> {
    let mut p = Parser::new(text);
    let term = p.term()?;
    p.skip_ws();
    if p.peek() != Some('.') {
        return Err(p.error_here(match p.peek() {
            None => "expected '.' after the term, found the end of the file".to_string(),
            Some(c) => format!("expected '.' after the term, found {}", describe(c)),
        }));
    }
    p.bump();
    p.skip_ws();
    match p.peek() {
        None => Ok(term),
        Some(_) => Err(p.error_here("unexpected text after the final '.'")),
    }
}

/// Parses one value as given on the command line (`-kraken listen_ip
/// '{127,0,0,1}'`): a single term, optionally followed by `.`.
pub fn parse_value(text: &str) -> Result<Term, ParseError> {
    let mut p = Parser::new(text);
    let term = p.term()?;
    p.skip_ws();
    if p.peek() == Some('.') {
        p.bump();
        p.skip_ws();
    }
    match p.peek() {
        None => Ok(term),
        Some(c) => Err(p.error_here(format!("unexpected {} after the term", describe(c)))),
    }
}

/// One element of a config file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigItem {
    /// A string in the top-level list names another config file to read at
    /// this point (the `.config` extension may be left off).
    Include { path: String, pos: Pos },
    /// `{Option, Value}` inside one of the wanted applications' sections.
    Setting {
        app: String,
        option: String,
        value: Term,
        pos: Pos,
    },
}

/// Walks a parsed config file `[{App, [{Option, Value}, ...]}, ...]` and
/// returns the settings of the applications named in `apps` plus the
/// includes, in file order. Other applications' sections are skipped
/// unexamined.
pub fn config_items(root: &Term, apps: &[&str]) -> Result<Vec<ConfigItem>, ParseError> {
    const SHAPE: &str = "a config file is a list of {Application, [{Option, Value}, ...]} tuples";
    let TermValue::List(sections) = &root.value else {
        return Err(ParseError {
            pos: root.pos,
            message: format!("expected a list: {SHAPE}"),
        });
    };
    let mut items = Vec::new();
    for section in sections {
        match &section.value {
            TermValue::String(path) => items.push(ConfigItem::Include {
                path: path.clone(),
                pos: section.pos,
            }),
            TermValue::Tuple(parts) if parts.len() == 2 && parts[0].as_atom().is_some() => {
                let app = parts[0].as_atom().unwrap_or_default();
                if !apps.contains(&app) {
                    continue;
                }
                let TermValue::List(entries) = &parts[1].value else {
                    return Err(ParseError {
                        pos: parts[1].pos,
                        message: format!(
                            "expected a list of {{Option, Value}} tuples for application {app}"
                        ),
                    });
                };
                for entry in entries {
                    match &entry.value {
                        TermValue::Tuple(kv) if kv.len() == 2 && kv[0].as_atom().is_some() => items
                            .push(ConfigItem::Setting {
                                app: app.to_string(),
                                option: kv[0].as_atom().unwrap_or_default().to_string(),
                                value: kv[1].clone(),
                                pos: entry.pos,
                            }),
                        _ => {
                            return Err(ParseError {
                                pos: entry.pos,
                                message: format!(
                                    "expected {{Option, Value}} with an atom as Option in \
                                     application {app}, found {entry}"
                                ),
                            })
                        }
                    }
                }
            }
            _ => {
                return Err(ParseError {
                    pos: section.pos,
                    message: format!("expected {{Application, [...]}} or a file name; {SHAPE}"),
                })
            }
        }
    }
    Ok(items)
}

fn describe(c: char) -> String {
    match c {
        '\n' => "a line break".to_string(),
        c if c.is_control() => format!("character U+{:04X}", c as u32),
        c => format!("'{c}'"),
    }
}

struct Parser {
    chars: Vec<char>,
    i: usize,
    line: u32,
    column: u32,
    depth: u32,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            chars: text.chars().collect(),
            i: 0,
            line: 1,
            column: 1,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i.saturating_add(ahead)).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.column = 1;
        } else {
            self.column = self.column.saturating_add(1);
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn error_at(&self, pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            pos,
            message: message.into(),
        }
    }

    fn error_here(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.pos(), message)
    }

    /// Skips whitespace and `%` comments.
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '%' {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    fn term(&mut self) -> Result<Term, ParseError> {
        self.skip_ws();
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Err(self.error_here("expected a term, found the end of the input"));
        };
        let value = match c {
            '[' => self.nested(Parser::list)?,
            '{' => self.nested(Parser::tuple)?,
            '<' if self.peek_at(1) == Some('<') => self.nested(Parser::binary)?,
            '"' => TermValue::String(self.strings()?),
            '\'' => TermValue::Atom(self.quoted('\'')?),
            '$' => {
                self.bump();
                TermValue::Integer(i128::from(self.char_literal()? as u32))
            }
            '-' | '+' => {
                self.bump();
                self.skip_ws();
                match self.number()? {
                    Some(TermValue::Integer(i)) if c == '-' => TermValue::Integer(-i),
                    Some(TermValue::Float(x)) if c == '-' => TermValue::Float(-x),
                    Some(v) => v,
                    None => return Err(self.error_here(format!("expected a number after '{c}'"))),
                }
            }
            c if c.is_ascii_digit() => match self.number()? {
                Some(v) => v,
                None => return Err(self.error_here("expected a number")),
            },
            c if c.is_lowercase() => TermValue::Atom(self.bare_atom()),
            c if c.is_uppercase() || c == '_' => {
                let name = self.bare_atom();
                return Err(self.error_at(
                    pos,
                    format!("variables such as {name} are not allowed in a config file"),
                ));
            }
            '#' => return Err(self.error_here("maps are not supported in a config file")),
            c => {
                return Err(self.error_here(format!("expected a term, found {}", describe(c))));
            }
        };
        Ok(Term { value, pos })
    }

    fn nested(
        &mut self,
        parse: fn(&mut Parser) -> Result<TermValue, ParseError>,
    ) -> Result<TermValue, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_here(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// `[` already seen.
    fn list(&mut self) -> Result<TermValue, ParseError> {
        self.bump();
        self.skip_ws();
        let mut items = Vec::new();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(TermValue::List(items));
        }
        loop {
            items.push(self.term()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(TermValue::List(items));
                }
                Some('|') => {
                    self.bump();
                    let tail = self.term()?;
                    match tail.value {
                        TermValue::List(rest) => items.extend(rest),
                        TermValue::String(s) => items.extend(s.chars().map(|c| Term {
                            value: TermValue::Integer(i128::from(c as u32)),
                            pos: tail.pos,
                        })),
                        _ => return Err(self.error_at(
                            tail.pos,
                            "improper lists are not supported: the tail after '|' must be a list",
                        )),
                    }
                    self.skip_ws();
                    if self.peek() != Some(']') {
                        return Err(self.expected("']'"));
                    }
                    self.bump();
                    return Ok(TermValue::List(items));
                }
                _ => return Err(self.expected("',' or ']'")),
            }
        }
    }

    /// `{` already seen.
    fn tuple(&mut self) -> Result<TermValue, ParseError> {
        self.bump();
        self.skip_ws();
        let mut items = Vec::new();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(TermValue::Tuple(items));
        }
        loop {
            items.push(self.term()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(TermValue::Tuple(items));
                }
                _ => return Err(self.expected("',' or '}'")),
            }
        }
    }

    /// `<<` already seen. Segments: strings (each character one byte, or
    /// UTF-8 with `/utf8`) and integers 0..=255.
    fn binary(&mut self) -> Result<TermValue, ParseError> {
        self.bump();
        self.bump();
        self.skip_ws();
        let mut bytes = Vec::new();
        if self.peek() == Some('>') && self.peek_at(1) == Some('>') {
            self.bump();
            self.bump();
            return Ok(TermValue::Binary(bytes));
        }
        loop {
            self.skip_ws();
            let pos = self.pos();
            match self.peek() {
                Some('"') => {
                    let s = self.strings()?;
                    self.skip_ws();
                    if self.peek() == Some('/') {
                        self.bump();
                        self.skip_ws();
                        let spec_pos = self.pos();
                        let spec = self.bare_atom();
                        if spec != "utf8" {
                            return Err(self.error_at(
                                spec_pos,
                                "only /utf8 is supported as a binary segment type",
                            ));
                        }
                        bytes.extend_from_slice(s.as_bytes());
                    } else {
                        for c in s.chars() {
                            let Ok(byte) = u8::try_from(c as u32) else {
                                return Err(self.error_at(
                                    pos,
                                    format!("character {c:?} does not fit in a byte; add /utf8"),
                                ));
                            };
                            bytes.push(byte);
                        }
                    }
                }
                Some(c) if c.is_ascii_digit() || c == '$' => {
                    let value = if c == '$' {
                        self.bump();
                        i128::from(self.char_literal()? as u32)
                    } else {
                        match self.number()? {
                            Some(TermValue::Integer(i)) => i,
                            _ => return Err(self.error_at(pos, "expected a byte (0..255)")),
                        }
                    };
                    let Ok(byte) = u8::try_from(value) else {
                        return Err(self.error_at(pos, format!("{value} is not a byte (0..255)")));
                    };
                    bytes.push(byte);
                }
                _ => return Err(self.expected("a string or a byte in the binary")),
            }
            self.skip_ws();
            match (self.peek(), self.peek_at(1)) {
                (Some(','), _) => {
                    self.bump();
                }
                (Some('>'), Some('>')) => {
                    self.bump();
                    self.bump();
                    return Ok(TermValue::Binary(bytes));
                }
                _ => return Err(self.expected("',' or '>>'")),
            }
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        match self.peek() {
            None => self.error_here(format!("expected {what}, found the end of the input")),
            Some(c) => self.error_here(format!("expected {what}, found {}", describe(c))),
        }
    }

    /// One or more adjacent `"..."` literals, concatenated as Erlang does.
    fn strings(&mut self) -> Result<String, ParseError> {
        let mut s = String::new();
        loop {
            s.push_str(&self.quoted('"')?);
            // Look past whitespace and comments for another literal.
            let save = (self.i, self.line, self.column);
            self.skip_ws();
            if self.peek() != Some('"') {
                (self.i, self.line, self.column) = save;
                return Ok(s);
            }
        }
    }

    /// A quoted string or atom, at its opening quote.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos();
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.error_at(
                        start,
                        format!(
                            "unterminated {} (missing closing {quote})",
                            if quote == '"' {
                                "string"
                            } else {
                                "quoted atom"
                            }
                        ),
                    ))
                }
                Some('\\') => s.push(self.escape()?),
                Some(c) if c == quote => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    /// The character after `$`.
    fn char_literal(&mut self) -> Result<char, ParseError> {
        match self.bump() {
            None => Err(self.error_here("expected a character after '$'")),
            Some('\\') => self.escape(),
            Some(c) => Ok(c),
        }
    }

    /// An escape sequence, the backslash already seen.
    fn escape(&mut self) -> Result<char, ParseError> {
        let pos = self.pos();
        let Some(c) = self.bump() else {
            return Err(self.error_here("unterminated escape sequence"));
        };
        let code: u32 = match c {
            'b' => 8,
            'd' => 127,
            'e' => 27,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            's' => 32,
            't' => 9,
            'v' => 11,
            '0'..='7' => {
                let mut code = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            self.bump();
                            code = code * 8 + d;
                        }
                        None => break,
                    }
                }
                code
            }
            'x' => {
                if self.peek() == Some('{') {
                    self.bump();
                    let mut code: u32 = 0;
                    let mut digits = 0;
                    loop {
                        match self.bump() {
                            Some('}') if digits > 0 => break,
                            Some(d) if d.is_ascii_hexdigit() => {
                                digits += 1;
                                code = code
                                    .checked_mul(16)
                                    .and_then(|v| v.checked_add(d.to_digit(16).unwrap_or(0)))
                                    .ok_or_else(|| {
                                        self.error_at(pos, "character code too large")
                                    })?;
                            }
                            _ => {
                                return Err(self.error_at(pos, "bad \\x{...} escape sequence"));
                            }
                        }
                    }
                    code
                } else {
                    let mut code = 0;
                    for _ in 0..2 {
                        match self.bump().and_then(|d| d.to_digit(16)) {
                            Some(d) => code = code * 16 + d,
                            None => {
                                return Err(self.error_at(pos, "bad \\xHH escape sequence"));
                            }
                        }
                    }
                    code
                }
            }
            '^' => match self.bump() {
                Some(c) => (c as u32) % 32,
                None => return Err(self.error_here("unterminated escape sequence")),
            },
            c => c as u32,
        };
        char::from_u32(code)
            .ok_or_else(|| self.error_at(pos, format!("invalid character code {code}")))
    }

    /// `[a-z][A-Za-z0-9_@]*` (also used to read a variable's name for its
    /// error message).
    fn bare_atom(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '@' {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        s
    }

    /// Digits with `_` separators (the first already known to be a digit,
    /// or `None` is returned).
    fn digits(&mut self, radix: u32) -> Option<String> {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_digit(radix) {
                s.push(c);
                self.bump();
            } else if c == '_'
                && !s.is_empty()
                && self.peek_at(1).is_some_and(|d| d.is_digit(radix))
            {
                self.bump();
            } else {
                break;
            }
        }
        (!s.is_empty()).then_some(s)
    }

    /// An unsigned integer (`42`, `16#ff`) or float (`1.5`, `2.0e-3`);
    /// `None` if no digit is here.
    fn number(&mut self) -> Result<Option<TermValue>, ParseError> {
        let pos = self.pos();
        let Some(int) = self.digits(10) else {
            return Ok(None);
        };
        let too_large = |p: &Parser| p.error_at(pos, "integer too large");
        if self.peek() == Some('#') {
            let radix: u32 = int
                .parse()
                .ok()
                .filter(|r| (2..=36).contains(r))
                .ok_or_else(|| {
                    self.error_at(pos, format!("bad number base {int} (must be 2..36)"))
                })?;
            self.bump();
            let Some(ds) = self.digits(radix) else {
                return Err(self.error_here(format!("expected base-{radix} digits after '#'")));
            };
            return i128::from_str_radix(&ds, radix)
                .map(|i| Some(TermValue::Integer(i)))
                .map_err(|_| too_large(self));
        }
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            let frac = self.digits(10).unwrap_or_default();
            let mut text = format!("{int}.{frac}");
            if matches!(self.peek(), Some('e' | 'E')) {
                let sign = self.peek_at(1);
                let (skip, sign) = match sign {
                    Some('+' | '-') => (2, sign),
                    _ => (1, None),
                };
                if self.peek_at(skip).is_some_and(|c| c.is_ascii_digit()) {
                    for _ in 0..skip {
                        self.bump();
                    }
                    let exp = self.digits(10).unwrap_or_default();
                    text.push('e');
                    if let Some(s) = sign {
                        text.push(s);
                    }
                    text.push_str(&exp);
                }
            }
            return match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(TermValue::Float(x))),
                _ => Err(self.error_at(pos, "float out of range")),
            };
        }
        int.parse::<i128>()
            .map(|i| Some(TermValue::Integer(i)))
            .map_err(|_| too_large(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> TermValue {
        parse_value(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .value
    }

    fn err(text: &str) -> String {
        parse_file(text).expect_err(text).to_string()
    }

    fn int(i: i128) -> TermValue {
        TermValue::Integer(i)
    }

    fn atom(a: &str) -> TermValue {
        TermValue::Atom(a.to_string())
    }

    fn string(s: &str) -> TermValue {
        TermValue::String(s.to_string())
    }

    fn values(v: TermValue) -> Vec<TermValue> {
        match v {
            TermValue::List(items) | TermValue::Tuple(items) => {
                items.into_iter().map(|t| t.value).collect()
            }
            other => panic!("not a list or tuple: {other:?}"),
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(p("8"), int(8));
        assert_eq!(p("-8"), int(-8));
        assert_eq!(p("- 8"), int(-8));
        assert_eq!(p("+8"), int(8));
        assert_eq!(p("1_000_000"), int(1_000_000));
        assert_eq!(p("16#ff"), int(255));
        assert_eq!(p("2#101"), int(5));
        assert_eq!(p("$a"), int(97));
        assert_eq!(p("$\\n"), int(10));
        assert_eq!(p("1.5"), TermValue::Float(1.5));
        assert_eq!(p("-2.5e-3"), TermValue::Float(-0.0025));
        assert_eq!(p("1.0E3"), TermValue::Float(1000.0));
        assert_eq!(p("debug"), atom("debug"));
        assert_eq!(p("kraken@host_1"), atom("kraken@host_1"));
        assert_eq!(p("'Quoted atom'"), atom("Quoted atom"));
        assert_eq!(p("''"), atom(""));
        assert_eq!(p("\"/var/run/kraken.pid\""), string("/var/run/kraken.pid"));
        assert_eq!(p("\"\""), string(""));
        assert_eq!(p("8."), int(8));
    }

    #[test]
    fn string_escapes_and_concatenation() {
        assert_eq!(
            p(r#""a\"b\\c\n\t\s\101\x41\x{263A}\^a\e\d\z""#),
            string("a\"b\\c\n\t A\u{41}\u{263A}\u{1}\u{1b}\u{7f}z")
        );
        assert_eq!(p("\"abc\" \"def\""), string("abcdef"));
        assert_eq!(p("\"abc\" % comment\n \"def\""), string("abcdef"));
        assert_eq!(p("\"multi\nline\""), string("multi\nline"));
        assert_eq!(p("'it\\'s'"), atom("it's"));
        assert_eq!(p("\"héllo ☺\""), string("héllo ☺"));
    }

    #[test]
    fn binaries() {
        assert_eq!(p("<<\"x\">>"), TermValue::Binary(b"x".to_vec()));
        assert_eq!(p("<<>>"), TermValue::Binary(vec![]));
        assert_eq!(p("<< 1, 2 ,255 >>"), TermValue::Binary(vec![1, 2, 255]));
        assert_eq!(p("<<\"a\", \"b\">>"), TermValue::Binary(b"ab".to_vec()));
        assert_eq!(
            p("<<\"é\"/utf8>>"),
            TermValue::Binary("é".as_bytes().to_vec())
        );
        assert_eq!(p("<<\"é\">>"), TermValue::Binary(vec![0xe9]));
        assert!(parse_value("<<256>>").is_err());
        assert!(parse_value("<<\"☺\">>").is_err());
        assert!(parse_value("<<\"x\"/binary>>").is_err());
    }

    #[test]
    fn lists_and_tuples() {
        assert_eq!(p("[]"), TermValue::List(vec![]));
        assert_eq!(p("{}"), TermValue::Tuple(vec![]));
        assert_eq!(
            values(p("{127,0,0,1}")),
            vec![int(127), int(0), int(0), int(1)]
        );
        assert_eq!(
            values(p("[ \"h:1\" , \"h:2\" ]")),
            vec![string("h:1"), string("h:2")]
        );
        assert_eq!(
            values(p("[a | [b, c]]")),
            vec![atom("a"), atom("b"), atom("c")]
        );
        assert_eq!(values(p("[a | []]")), vec![atom("a")]);
        assert!(parse_value("[a | b]").is_err());
        let spaced = parse_value("[ {kraken , [{listen_ip,\n{127, 0,0,1}}]}]").unwrap();
        assert_eq!(spaced.to_string(), "[{kraken,[{listen_ip,{127,0,0,1}}]}]");
    }

    #[test]
    fn positions() {
        let t = parse_file("\n  [ {a,\n    1}].").unwrap();
        assert_eq!(t.pos, Pos { line: 2, column: 3 });
        let TermValue::List(items) = t.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 2, column: 5 });
        let TermValue::Tuple(kv) = &items[0].value else {
            panic!()
        };
        assert_eq!(kv[1].pos, Pos { line: 3, column: 5 });
    }

    #[test]
    fn error_messages_name_line_and_column() {
        assert_eq!(
            err("[{kraken, [\n  {a, 1},\n  {b, 2} {c, 3}]}]."),
            "line 3, column 10: expected ',' or ']', found '{'"
        );
        assert_eq!(
            err("[{a, 1}"),
            "line 1, column 8: expected ',' or ']', found the end of the input"
        );
        assert_eq!(
            err("{a 1}."),
            "line 1, column 4: expected ',' or '}', found '1'"
        );
        assert_eq!(
            err("[{a, 1}]"),
            "line 1, column 9: expected '.' after the term, found the end of the file"
        );
        assert_eq!(
            err("[]. []."),
            "line 1, column 5: unexpected text after the final '.'"
        );
        assert_eq!(
            err("[{a, \"x}]."),
            "line 1, column 6: unterminated string (missing closing \")"
        );
        assert_eq!(
            err("[{a, Foo}]."),
            "line 1, column 6: variables such as Foo are not allowed in a config file"
        );
        assert_eq!(
            err("[#{}]."),
            "line 1, column 2: maps are not supported in a config file"
        );
        assert_eq!(
            err("[-a]."),
            "line 1, column 3: expected a number after '-'"
        );
        assert_eq!(
            err(""),
            "line 1, column 1: expected a term, found the end of the input"
        );
        assert_eq!(
            err("[1, ;]."),
            "line 1, column 5: expected a term, found ';'"
        );
        assert_eq!(
            err("[99999999999999999999999999999999999999999]."),
            "line 1, column 2: integer too large"
        );
        assert_eq!(
            err("[\"\\x{110000}\"]."),
            "line 1, column 4: invalid character code 1114112"
        );
        assert_eq!(
            err("[37#1]."),
            "line 1, column 2: bad number base 37 (must be 2..36)"
        );
    }

    #[test]
    fn comments_and_whitespace() {
        let t = parse_file(
            "% leading comment\n[ % after bracket\n {kraken, % app\n\t[{a, 1}]} % x\n] % before dot\n. % after dot\n",
        )
        .unwrap();
        let items = config_items(&t, &["kraken"]).unwrap();
        assert_eq!(items.len(), 1);
        // '%' inside strings and quoted atoms is text, not a comment.
        assert_eq!(p("\"100%\""), string("100%"));
        assert_eq!(p("'50%'"), atom("50%"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        let e = parse_file(&deep).unwrap_err();
        assert!(e.message.contains("nesting deeper"), "{e}");
        let ok = format!("{}{}.", "[".repeat(50), "]".repeat(50));
        assert!(parse_file(&ok).is_ok());
    }

    #[test]
    fn config_items_picks_wanted_sections_in_order() {
        let t = parse_file(
            r#"["/etc/common",
                {kernel, [{inet_dist_listen_min, 9100}]},
                {lager, whatever},
                {octopus, [{num_router_shards, 8}]},
                {kraken, [{pid_file, "/var/run/kraken.pid"}, {num_router_shards, 16}]}]."#,
        )
        .unwrap();
        let items = config_items(&t, &["kraken", "octopus"]).unwrap();
        let summary: Vec<String> = items
            .iter()
            .map(|i| match i {
                ConfigItem::Include { path, pos } => format!("include {path} @{}", pos.line),
                ConfigItem::Setting {
                    app,
                    option,
                    value,
                    pos,
                } => {
                    format!("{app}.{option}={value} @{}", pos.line)
                }
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "include /etc/common @1",
                "octopus.num_router_shards=8 @4",
                "kraken.pid_file=\"/var/run/kraken.pid\" @5",
                "kraken.num_router_shards=16 @5",
            ]
        );
    }

    #[test]
    fn config_items_shape_errors() {
        let check = |text: &str, want: &str| {
            let t = parse_file(text).unwrap();
            let e = config_items(&t, &["kraken"]).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        };
        check("{kraken, []}.", "line 1, column 1: expected a list");
        check(
            "[kraken].",
            "line 1, column 2: expected {Application, [...]}",
        );
        check(
            "[{kraken, 8}].",
            "line 1, column 11: expected a list of {Option, Value}",
        );
        check(
            "[{kraken, [{a, 1, 2}]}].",
            "line 1, column 12: expected {Option, Value} with an atom as Option in application kraken, found {a,1,2}",
        );
        check(
            "[{kraken, [{\"a\", 1}]}].",
            "line 1, column 12: expected {Option, Value}",
        );
        // Other applications' sections are not examined.
        let t = parse_file("[{kernel, 8}, {lager, [junk]}].").unwrap();
        assert_eq!(config_items(&t, &["kraken"]).unwrap(), vec![]);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "[{kraken,[{listen_ip,{127,0,0,1}},{pid_file,\"/x \\\"y\\\"\"}]}]",
            "{'Hello world',-5,1.5,<<\"bin\">>,<<1,255>>,[]}",
            "\"tab\\there\"",
        ] {
            let t = parse_value(text).unwrap();
            assert_eq!(t.to_string(), text);
        }
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        const VALID: &str = r#"%% Kraken config
[{kernel, [{inet_dist_listen_min, 9100}]},
 {octopus, [
    {pid_file, "/var/run/kraken.pid"},
    {log_file, "/var/log/kraken.log"},
    {max_tcp_clients, 30000},
    {listen_ip, {127,0,0,1}},
    {upstreams, ["h:1", <<"h:2">>, 'h:3']},
    {client_idle_timeout, 1.5e1},
    {num_router_shards, -16#8}]}].
"#;

        fn exercise(text: &str) {
            if let Ok(t) = parse_file(text) {
                let _ = config_items(&t, &["kraken", "octopus"]);
                let shown = t.to_string();
                // What Display writes parses back to the same term.
                let again = parse_value(&shown).expect("display output parses");
                assert_eq!(again.to_string(), shown);
            }
            let _ = parse_value(text);
        }

        proptest! {
            // No regression files: this tree's files belong to the project.
            #![proptest_config(ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn random_strings(s in "\\PC*") {
                exercise(&s);
            }

            #[test]
            fn random_term_alphabet(s in "[\\[\\]{}<>,.|%$'\"\\\\a-zA-Z0-9_#+\\- \n/]{0,200}") {
                exercise(&s);
            }

            #[test]
            fn mutations_of_a_valid_file(
                edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8)
            ) {
                let mut chars: Vec<char> = VALID.chars().collect();
                for (at, kind, c) in edits {
                    let i = at.index(chars.len() + 1);
                    match kind {
                        0 => chars.insert(i, c),
                        1 if i < chars.len() => { chars.remove(i); }
                        _ if i < chars.len() => chars[i] = c,
                        _ => chars.push(c),
                    }
                }
                let text: String = chars.into_iter().collect();
                exercise(&text);
            }

            #[test]
            fn truncations_of_a_valid_file(n in 0usize..400) {
                let text: String = VALID.chars().take(n).collect();
                exercise(&text);
            }
        }

        #[test]
        fn the_valid_file_is_valid() {
            let t = parse_file(VALID).unwrap();
            assert_eq!(config_items(&t, &["kraken", "octopus"]).unwrap().len(), 7);
        }
    }
}
