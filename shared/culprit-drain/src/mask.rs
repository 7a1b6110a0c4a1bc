//! Tokenising a log line and masking the tokens that carry values rather than meaning.
//!
//! Everything here works on ASCII bytes: every delimiter is ASCII, so slicing at their positions
//! always lands on UTF-8 boundaries, and non-ASCII text simply never looks like a value.

use std::borrow::Cow;

/// The placeholder a variable token (or part of a token) is replaced with.
pub const WILDCARD: &str = "<*>";

/// Splits `line` on whitespace and masks variable tokens, or variable parts of tokens.
pub fn tokenize(line: &str) -> Vec<Cow<'_, str>> {
    line.split_whitespace().map(mask_token).collect()
}

/// Masks one whitespace-free token.
///
/// The whole token is tried first (so `10.0.0.1:80` or `/a/1/b` become one wildcard); failing
/// that, it is cut at punctuation that glues values to words (`size:123`, `key=0x1f,`,
/// `(dcr 0x1)`) and each piece is tried on its own. Cutting happens in two rounds, `:` last,
/// so `addr=10.0.0.1:80` keeps the address whole.
pub fn mask_token(token: &str) -> Cow<'_, str> {
    // Every kind of value recognised below contains a digit; words without one are constants.
    if !token.bytes().any(|b| b.is_ascii_digit()) || token.contains(WILDCARD) {
        return Cow::Borrowed(token);
    }
    if is_value(token) {
        return Cow::Borrowed(WILDCARD);
    }
    let mut masked = String::with_capacity(token.len());
    let mut changed = false;
    for_each_piece(token, is_outer_delimiter, |piece| match piece {
        Piece::Delimiter(d) => masked.push_str(d),
        Piece::Text(text) => {
            if let Some(replaced) = mask_piece(text) {
                masked.push_str(&replaced);
                changed = true;
                return;
            }
            for_each_piece(
                text,
                |b| b == b':',
                |inner| match inner {
                    Piece::Delimiter(d) => masked.push_str(d),
                    Piece::Text(inner_text) => match mask_piece(inner_text) {
                        Some(replaced) => {
                            masked.push_str(&replaced);
                            changed = true;
                        }
                        None => masked.push_str(inner_text),
                    },
                },
            );
        }
    });
    if changed {
        Cow::Owned(masked)
    } else {
        Cow::Borrowed(token)
    }
}

/// Punctuation that separates a value from the word it is glued to, `:` excepted (it belongs to
/// addresses and times, so it is only cut at when the piece as a whole is not a value).
fn is_outer_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'=' | b',' | b';' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b'\'' | b'&' | b'|'
    )
}

enum Piece<'a> {
    Text(&'a str),
    Delimiter(&'a str),
}

fn for_each_piece<'a>(s: &'a str, is_delimiter: impl Fn(u8) -> bool, mut f: impl FnMut(Piece<'a>)) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if is_delimiter(b) {
            if start < i {
                f(Piece::Text(&s[start..i]));
            }
            f(Piece::Delimiter(&s[i..i + 1]));
            start = i + 1;
        }
    }
    if start < s.len() {
        f(Piece::Text(&s[start..]));
    }
}

/// A piece that is a value becomes the wildcard; a value ending a sentence keeps its full stop.
fn mask_piece(piece: &str) -> Option<Cow<'static, str>> {
    if is_value(piece) {
        return Some(Cow::Borrowed(WILDCARD));
    }
    let trimmed = piece.trim_end_matches('.');
    if trimmed.len() < piece.len() && is_value(trimmed) {
        let dots = &piece[trimmed.len()..];
        return Some(Cow::Owned(format!("{WILDCARD}{dots}")));
    }
    None
}

/// Whether a (masked) token names the statement that wrote the line: `ContactsServiceImpl#37`
/// (logback's `%logger#%line`), `Foo.java:120`, `(handler.py:88)`. Two lines naming different
/// statements come from different templates however alike their text is, so these tokens are
/// never generalised away.
pub fn is_code_location(token: &str) -> bool {
    let t = token.trim_matches(|c: char| matches!(c, '(' | ')' | '[' | ']' | ','));
    let Some(cut) = t.rfind(['#', ':']) else {
        return false;
    };
    let (name, line) = (&t[..cut], &t[cut + 1..]);
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return false;
    }
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'$' | b'-'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !name_ok {
        return false;
    }
    if t.as_bytes()[cut] == b'#' {
        return true;
    }
    // `name:digits` is also `host:port`; only a source file's extension makes it a location.
    const SOURCE_EXTENSIONS: [&str; 14] = [
        "java", "kt", "scala", "py", "go", "rs", "js", "ts", "rb", "cs", "c", "cc", "cpp", "php",
    ];
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| SOURCE_EXTENSIONS.contains(&ext))
}

/// Whether `s`, taken as a whole, is a value: a number, a hex number or id, a UUID, an IP
/// address (with or without a port), a timestamp, a path with digits in it, or an id made of a
/// short word and a value (`blk_-42`, `req-<uuid>`).
pub fn is_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    // A trailing `.` or `:` is punctuation of the sentence, not part of the value.
    if bytes.is_empty()
        || matches!(bytes.last(), Some(b'.' | b':'))
        || !bytes.iter().any(u8::is_ascii_digit)
    {
        return false;
    }
    is_number(bytes)
        || is_prefixed_hex(bytes)
        || is_long_hex(bytes)
        || is_hex_with_dashes(bytes)
        || is_digits_with_separators(bytes)
        || is_ipv6(bytes)
        || is_path_with_digits(bytes)
        || is_prefixed_id(bytes)
}

/// `42`, `-7`, `+3.5`, `.5`, `1e-9`, `99.9%`.
fn is_number(s: &[u8]) -> bool {
    let s = s.strip_suffix(b"%").unwrap_or(s);
    let s = match s.first() {
        Some(b'-' | b'+') => &s[1..],
        _ => s,
    };
    let (mantissa, exponent) = match s.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut seen_digit = false;
    let mut seen_point = false;
    for &b in mantissa {
        match b {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_point => seen_point = true,
            _ => return false,
        }
    }
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = match e.first() {
                Some(b'-' | b'+') => &e[1..],
                _ => e,
            };
            !e.is_empty() && e.iter().all(u8::is_ascii_digit)
        }
    };
    seen_digit && exponent_ok
}

/// `0x1f`, `0XDEAD`.
fn is_prefixed_hex(s: &[u8]) -> bool {
    s.len() > 2
        && s[0] == b'0'
        && (s[1] == b'x' || s[1] == b'X')
        && s[2..].iter().all(u8::is_ascii_hexdigit)
}

/// Bare hex of at least 8 digits: trace and span ids, hashes, register dumps.
fn is_long_hex(s: &[u8]) -> bool {
    s.len() >= 8 && s.iter().all(u8::is_ascii_hexdigit)
}

/// UUIDs and their cousins: hex groups joined by dashes, at least 16 hex digits in all.
fn is_hex_with_dashes(s: &[u8]) -> bool {
    let hex_digits = s.iter().filter(|b| b.is_ascii_hexdigit()).count();
    hex_digits >= 16 && s.iter().all(|&b| b.is_ascii_hexdigit() || b == b'-')
}

/// IPv4 addresses with optional port, dates, times, versions, `1,024`: digits and separators.
/// A `T` or `Z` is allowed once there are enough digits to be an ISO-8601 timestamp.
fn is_digits_with_separators(s: &[u8]) -> bool {
    let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
    s.first().is_some_and(u8::is_ascii_digit)
        && s.iter().all(|&b| match b {
            b'0'..=b'9' | b'.' | b':' | b'-' | b'/' | b'_' | b',' | b'+' => true,
            b'T' | b'Z' => digits >= 6,
            _ => false,
        })
}

/// `fe80::1`, `2001:db8:0:0:0:0:2:1`, `::ffff:10.0.0.1`.
fn is_ipv6(s: &[u8]) -> bool {
    let colons = s.iter().filter(|&&b| b == b':').count();
    colons >= 2
        && s.iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// `/var/log/app-3.log`, `/10.0.0.1:50010`, `HTTP/1.1`, `http://host:8080/x?id=7`.
fn is_path_with_digits(s: &[u8]) -> bool {
    s.contains(&b'/')
        && !s.iter().any(|&b| {
            matches!(
                b,
                b'"' | b'\'' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b',' | b';'
            )
        })
}

/// `blk_-4234`, `req-0b1c...`, `instance-00000001`: a short word, `_` or `-`, then a value.
fn is_prefixed_id(s: &[u8]) -> bool {
    let Some(cut) = s.iter().position(|&b| b == b'_' || b == b'-') else {
        return false;
    };
    let (word, rest) = (&s[..cut], &s[cut + 1..]);
    !word.is_empty()
        && word.len() <= 16
        && word.iter().all(u8::is_ascii_alphabetic)
        && !rest.is_empty()
        && (is_number(rest)
            || is_prefixed_hex(rest)
            || is_long_hex(rest)
            || is_hex_with_dashes(rest)
            || is_digits_with_separators(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(line: &str) -> String {
        tokenize(line).join(" ")
    }

    #[test]
    fn integers_floats_and_percentages_are_masked() {
        assert_eq!(masked("took 42 ms"), "took <*> ms");
        assert_eq!(
            masked("delta -7 ratio 0.25 rate 99.5% tiny 1e-9"),
            "delta <*> ratio <*> rate <*> tiny <*>"
        );
    }

    #[test]
    fn hex_numbers_and_long_hex_ids_are_masked() {
        assert_eq!(masked("reg 0x1f ok"), "reg <*> ok");
        assert_eq!(
            masked("trace 4bf92f3577b34da6a3ce929d0e0e4736"),
            "trace <*>"
        );
        assert_eq!(masked("span 00f067aa0ba902b7"), "span <*>");
    }

    #[test]
    fn short_hex_looking_words_stay_constant() {
        assert_eq!(
            masked("added a bead to the cafe"),
            "added a bead to the cafe"
        );
    }

    #[test]
    fn uuids_are_masked() {
        assert_eq!(
            masked("[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started"),
            "[instance: <*>] VM Started"
        );
    }

    #[test]
    fn ip_addresses_with_and_without_port_are_masked() {
        assert_eq!(
            masked("from 10.251.73.220:50010 to 10.0.0.1"),
            "from <*> to <*>"
        );
        assert_eq!(
            masked("peer fe80::1ff:fe23:4567:890a and ::1"),
            "peer <*> and <*>"
        );
        assert_eq!(masked("peer [2001:db8::1]:443"), "peer [<*>]:<*>");
    }

    #[test]
    fn paths_with_digits_are_masked_and_plain_paths_kept() {
        assert_eq!(masked("open /var/log/app-3.log"), "open <*>");
        assert_eq!(masked("open /etc/hosts"), "open /etc/hosts");
        assert_eq!(masked("\"GET /v2/servers HTTP/1.1\""), "\"GET <*> <*>\"");
    }

    #[test]
    fn numeric_key_value_pairs_keep_the_key() {
        assert_eq!(
            masked("code=7 errno=-2, user=bob"),
            "code=<*> errno=<*>, user=bob"
        );
        assert_eq!(masked("size:123 used:4.5,"), "size:<*> used:<*>,");
        assert_eq!(masked("addr=10.0.0.1:80"), "addr=<*>");
    }

    #[test]
    fn block_and_request_ids_are_masked() {
        assert_eq!(
            masked("block blk_-1608999687919862906 served"),
            "block <*> served"
        );
        assert_eq!(
            masked("req-38101a0b-2096-447d-96ea-a692162415ae done"),
            "<*> done"
        );
    }

    #[test]
    fn timestamps_are_masked() {
        assert_eq!(masked("at 2017-05-16 00:00:00.008"), "at <*> <*>");
        assert_eq!(masked("at 2023-01-29T08:50:00.123Z"), "at <*>");
    }

    #[test]
    fn code_locations_and_identifiers_stay_constant() {
        assert_eq!(
            masked("INFO ContactsServiceImpl#37 node R02-M1-N0-C:J12-U11 v2 ts-travel-service"),
            "INFO ContactsServiceImpl#37 node R02-M1-N0-C:J12-U11 v2 ts-travel-service"
        );
    }

    #[test]
    fn code_locations_are_recognised_and_host_ports_are_not() {
        for token in [
            "t.s.TravelServiceImpl#366",
            "Foo.java:120",
            "(handler.py:88)",
            "main.go:12",
        ] {
            assert!(is_code_location(token), "{token}");
        }
        for token in [
            "db:5432",
            "localhost:8080",
            "#12",
            "issue#",
            "10.0.0.1:80",
            "<*>",
            "a#b",
        ] {
            assert!(!is_code_location(token), "{token}");
        }
    }

    #[test]
    fn a_number_ending_a_sentence_keeps_its_full_stop() {
        assert_eq!(masked("retrying in 5."), "retrying in <*>.");
    }

    #[test]
    fn unmasked_tokens_are_borrowed_not_copied() {
        let tokens = tokenize("plain words only");
        assert!(tokens.iter().all(|t| matches!(t, Cow::Borrowed(_))));
    }
}
