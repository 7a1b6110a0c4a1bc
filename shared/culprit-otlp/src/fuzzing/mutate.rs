//! Inputs for a decoder: random bytes, and valid encodings (the seeds) damaged the way real
//! payloads are (flipped, inserted, deleted and duplicated bytes, truncation, splices of two
//! payloads) or made hostile on purpose (huge and non-finite numbers, deep nesting, huge strings,
//! invalid UTF-8, protobuf lengths claiming gigabytes).

use super::rng::Rng;

/// Inputs stop growing here: the fuzz loop is about many inputs, the size checks
/// ([`super::linear`]) are about big ones.
const MAX_INPUT: usize = 256 * 1024;

/// Numbers a decoder must refuse or clamp: past u64/i64, not finite, negative, fractional.
const HOSTILE_NUMBERS: &[&str] = &[
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "-9223372036854775809",
    "-9223372036854775808",
    "-1",
    "-0",
    "0",
    "1e309",
    "-1e309",
    "1e-400",
    "1.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "\"NaN\"",
    "\"Infinity\"",
    "\"-Infinity\"",
    "\"-1\"",
    "\"18446744073709551616\"",
    "99999999999999999999999999999999999999",
    "0x10",
];

/// Bytes that are not UTF-8: a lone continuation byte, a truncated sequence, an encoded
/// surrogate, an overlong slash, a byte never valid.
const INVALID_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xff\xfe",
    b"\\ud800",
    b"\\u0000",
];

/// Protobuf fragments: a length-delimited field whose length claims 4 GiB, a varint that never
/// ends, a field of a wire type that does not exist, a group start.
const PROTOBUF_HOSTILE: &[&[u8]] = &[
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x12\xff\xff\xff\xff\x0f",
    b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x0f",
    b"\x0b",
    b"\x0a\x7f",
];

/// Units that nest when repeated: JSON arrays and objects, OTLP/JSON AnyValues, protobuf
/// length-delimited fields.
const NESTING: &[&[u8]] = &[
    b"[",
    b"{\"a\":",
    b"{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":",
    b"\x0a\x80\x01",
];

/// Produces inputs from seeds and a dictionary of format tokens.
#[derive(Debug, Clone)]
pub struct Mutator {
    seeds: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    /// `seeds`: valid encodings to damage (at least one); `dictionary`: tokens of the format
    /// (keys, punctuation) to splice in.
    pub fn new(seeds: Vec<Vec<u8>>, dictionary: Vec<Vec<u8>>) -> Mutator {
        assert!(!seeds.is_empty(), "a mutator needs at least one seed");
        Mutator { seeds, dictionary }
    }

    pub fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    /// The next input: one in sixteen is random bytes, one in sixteen a seed as is, the rest a
    /// seed with one to four stacked mutations (more rarely get past the first check).
    pub fn next(&self, rng: &mut Rng) -> Vec<u8> {
        match rng.below(16) {
            0 => (0..rng.small_len(4096)).map(|_| rng.byte()).collect(),
            1 => rng.pick(&self.seeds).clone(),
            _ => {
                let mut out = rng.pick(&self.seeds).clone();
                for _ in 0..1 + rng.below(4) {
                    self.mutate(rng, &mut out);
                }
                out.truncate(MAX_INPUT);
                out
            }
        }
    }

    fn mutate(&self, rng: &mut Rng, out: &mut Vec<u8>) {
        let at = rng.below(out.len() + 1);
        match rng.below(15) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = *rng.pick(b"\x00\x01\x7f\x80\xff\"{}[],:\n\\ -0.e");
            }
            2 => {
                let bytes: Vec<u8> = (0..rng.small_len(8)).map(|_| rng.byte()).collect();
                splice_in(out, at, &bytes);
            }
            3 if !out.is_empty() => {
                let end = (at + rng.small_len(64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                let from = rng.below(out.len());
                let end = (from + rng.small_len(256)).min(out.len());
                let copy = out[from..end].to_vec();
                splice_in(out, at, &copy);
            }
            5 => out.truncate(at),
            6 if !self.dictionary.is_empty() => {
                let token = rng.pick(&self.dictionary).clone();
                splice_in(out, at, &token);
            }
            7 => replace_number(rng, out),
            8 => {
                let other = rng.pick(&self.seeds);
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            9 => {
                // Deep nesting: arrays, objects, or AnyValue-style nested values.
                let depth = rng.small_len(5000);
                let unit = *rng.pick(NESTING);
                let nested = unit.repeat(depth);
                splice_in(out, at, &nested);
            }
            10 => {
                let len = rng.small_len(100_000);
                let fill = *rng.pick(b"A\"\\0,\n");
                splice_in(out, at, &vec![fill; len]);
            }
            11 => {
                let bad = *rng.pick(INVALID_UTF8);
                splice_in(out, at, bad);
            }
            12 => {
                let bad = *rng.pick(PROTOBUF_HOSTILE);
                splice_in(out, at, bad);
            }
            13 => {
                let n = *rng.pick(HOSTILE_NUMBERS);
                splice_in(out, at, n.as_bytes());
            }
            _ => {
                // Repeat a record-sized chunk many times: many records, duplicate keys.
                if !out.is_empty() {
                    let from = rng.below(out.len());
                    let end = (from + rng.small_len(128)).min(out.len());
                    let chunk = out[from..end].repeat(rng.small_len(200));
                    splice_in(out, at, &chunk);
                }
            }
        }
    }
}

fn splice_in(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(out.len());
    out.splice(at..at, bytes.iter().copied());
}

/// Replaces a run of ASCII digits (a timestamp, a count, a value) with a hostile number.
fn replace_number(rng: &mut Rng, out: &mut Vec<u8>) {
    if out.is_empty() {
        return;
    }
    let start = rng.below(out.len());
    let Some(begin) = out[start..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| start + p)
        .or_else(|| out.iter().position(u8::is_ascii_digit))
    else {
        return;
    };
    let end = out[begin..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(out.len(), |p| begin + p);
    let number = rng.pick(HOSTILE_NUMBERS).as_bytes();
    out.splice(begin..end, number.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_deterministic_varied_and_bounded() {
        let m = Mutator::new(vec![b"{\"a\":123}".to_vec()], vec![b"\"b\"".to_vec()]);
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..500).map(|_| m.next(&mut rng)).collect::<Vec<_>>()
        };
        let (a, b) = (run(3), run(3));
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 300,
            "only {} distinct inputs",
            distinct.len()
        );
        assert!(a.iter().all(|i| i.len() <= MAX_INPUT.max(4096)));
        assert!(a.iter().any(|i| i.as_slice() == b"{\"a\":123}"));
    }

    #[test]
    fn a_number_run_is_replaced_whole() {
        let mut out = b"x=12345;".to_vec();
        let mut rng = Rng::new(1);
        replace_number(&mut rng, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("x=") && text.ends_with(';'), "{text}");
        assert!(!text.contains("12345"), "{text}");
    }
}
