//! Removes secrets and personal data from text before it leaves the process.
//!
//! Every telemetry-derived string the agent puts in a request (anomaly descriptions, signals, log
//! templates and lines, metric names, change summaries, past incidents' notes) and everything the
//! model wrote that is sent back to it passes through [`Redactor::redact`]. What it removes:
//! bearer and basic authorization values, `key=value` secrets (password, token, api key, secret,
//! ...), URL credentials, private-key blocks, well-known key formats (AWS, GitHub, Slack, OpenAI,
//! Google), JWTs, e-mail addresses, IPv4 and IPv6 addresses, and long hex or base64 strings.
//! Each is replaced by a bracketed marker naming its kind, so the model still sees that
//! something was there.
//!
//! Patterns are ordered from the most specific to the most general, so a JWT inside a bearer
//! header is reported as the header, and a key's value never survives as a base64 string.

use regex::{Captures, Regex};
use std::borrow::Cow;

/// One kind of secret and how it is found.
struct Rule {
    kind: &'static str,
    pattern: Regex,
    /// Replacement with `$name` groups; `None` replaces the whole match with `[REDACTED:kind]`.
    keep_prefix: bool,
    /// Extra check on the match (a long "base64" run must mix letters and digits).
    accept: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// Random base64 of 32+ characters mixes upper case, lower case and digits; URL paths and pod
/// names (`ts-travel-service-5f9c8d7b6-x2k4p`) have no upper case and stay.
fn looks_random(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_lowercase())
}

/// `Bearer <value>`: a credential has a digit or is long; `basic authentication` is prose.
fn credential_value(s: &str) -> bool {
    let value = s.split_whitespace().last().unwrap_or("");
    value.bytes().any(|b| b.is_ascii_digit()) || value.len() >= 24
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
}

/// The redaction rules, compiled once.
pub struct Redactor {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field(
                "rules",
                &self.rules.iter().map(|r| r.kind).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

/// Names that mark the value after them as a secret (`password=...`, `"api_key": "..."`).
const SECRET_KEYS: &str = r"pass(?:word|wd|phrase)?|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|session[_-]?(?:id|token|key)?|api[_-]?key|apikey|access[_-]?key(?:[_-]?id)?|secret[_-]?key|private[_-]?key|credentials?|x-api-key|cookie|set-cookie";

impl Redactor {
    pub fn new() -> Redactor {
        let rule = |kind, pattern: &str, keep_prefix, accept| Rule {
            kind,
            pattern: Regex::new(pattern).expect("static redaction pattern"),
            keep_prefix,
            accept,
        };
        let rules = vec![
            rule(
                "private_key",
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                false,
                always,
            ),
            // `Authorization: Bearer x`, `Bearer x`, `Basic x`: the scheme stays, the value goes.
            rule(
                "authorization",
                r"(?i)(?P<prefix>\b(?:bearer|basic|digest)\s+)[A-Za-z0-9\-._~+/]{8,}=*",
                true,
                credential_value,
            ),
            rule(
                "url_credentials",
                r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@:]+:[^\s/@]+@",
                true,
                always,
            ),
            // key=value, key: value, "key": "value", key="value" (value up to a delimiter).
            rule(
                "secret",
                &format!(
                    r#"(?i)(?P<prefix>\b(?:{SECRET_KEYS})["']?\s*[:=]\s*)(?:"[^"]*"|'[^']*'|[^\s,;&"'{{}}<>]+)"#
                ),
                true,
                always,
            ),
            rule("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", false, always),
            rule(
                "github_token",
                r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b",
                false,
                always,
            ),
            rule(
                "slack_token",
                r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",
                false,
                always,
            ),
            rule(
                "api_key",
                r"\b(?:sk|pk|rk)-(?:[a-z]+-)?[A-Za-z0-9_-]{20,}\b",
                false,
                always,
            ),
            rule("google_key", r"\bAIza[0-9A-Za-z_-]{35}\b", false, always),
            rule(
                "jwt",
                r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
                false,
                always,
            ),
            rule(
                "email",
                r"(?i)\b[A-Z0-9._%+-]+@[A-Z0-9.-]+\.[A-Z]{2,}\b",
                false,
                always,
            ),
            rule(
                "ipv6",
                r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,7}:",
                false,
                has_digit,
            ),
            rule(
                "ipv4",
                r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b",
                false,
                always,
            ),
            rule("hex", r"\b[0-9a-fA-F]{20,}\b", false, has_digit),
            rule("base64", r"[A-Za-z0-9+/_-]{32,}={0,2}", false, looks_random),
        ];
        Redactor { rules }
    }

    /// `text` with every secret replaced by `[REDACTED:<kind>]` (a key's name, a bearer scheme
    /// or a URL's scheme is kept in front of its marker).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for rule in &self.rules {
            if !rule.pattern.is_match(&out) {
                continue;
            }
            let replaced = rule
                .pattern
                .replace_all(&out, |c: &Captures<'_>| {
                    let whole = c.get(0).map_or("", |m| m.as_str());
                    if !(rule.accept)(whole) {
                        return whole.to_string();
                    }
                    let prefix = if rule.keep_prefix {
                        c.name("prefix").map_or("", |m| m.as_str())
                    } else {
                        ""
                    };
                    format!("{prefix}[REDACTED:{}]", rule.kind)
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        out
    }

    /// Redacts every string inside a JSON value, keys included.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        Redactor::new().redact(s).into_owned()
    }

    #[test]
    fn each_kind_of_secret_is_replaced_by_its_marker() {
        let cases = [
            ("Authorization: Bearer abcDEF123456789xyz", "abcDEF123456789xyz", "authorization"),
            ("login with password=hunter2!", "hunter2!", "secret"),
            (r#"{"api_key": "k3y-v4lue-123"}"#, "k3y-v4lue-123", "secret"),
            ("GET /cart?token=tok_5f3a9&x=1", "tok_5f3a9", "secret"),
            ("db postgres://admin:s3cr3t@db.internal:5432/x", "s3cr3t", "url_credentials"),
            ("user alice.smith@example.com logged in", "alice.smith@example.com", "email"),
            ("peer 10.42.7.19:8080 refused", "10.42.7.19", "ipv4"),
            ("peer 2001:db8:85a3:0:0:8a2e:370:7334 gone", "2001:db8:85a3:0:0:8a2e:370:7334", "ipv6"),
            ("peer fe80::1ff:fe23:4567:890a gone", "fe80::1ff:fe23:4567:890a", "ipv6"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "eyJhbGciOiJIUzI1NiJ9",
                "jwt",
            ),
            ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "aws_key"),
            ("sk-proj-abcdefghijklmnopqrstuvwx1234", "abcdefghijklmnopqrstuvwx1234", "api_key"),
            ("session 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "hex"),
            ("blob dGhpcyBpcyBhIHNlY3JldCBibG9iIDEyMzQ1Njc4OTA=", "dGhpcyBpcyBhIHNlY3JldCBibG9iIDEyMzQ1Njc4OTA", "base64"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "MIIEowIBAAKCAQEA",
                "private_key",
            ),
        ];
        for (input, secret, kind) in cases {
            let out = r(input);
            assert!(!out.contains(secret), "{kind}: {out}");
            assert!(out.contains(&format!("[REDACTED:{kind}]")), "{kind}: {out}");
        }
    }

    #[test]
    fn ordinary_log_text_survives() {
        for text in [
            "ERROR c.s.CartService#88 cart total went negative after <*> items",
            "GET /api/v1/orders took 1532 ms at 12:30:45",
            "ts-order-service calls ts-station-service",
            "std::vector<int> resized",
            "span 5f3a9c2e1b7d4a60 retried", // a 16-hex span id is not a secret
            "basic authentication failed for /api/v1/travelservice/trips/left",
            "pod ts-travel-service-5f9c8d7b6-x2k4p restarted",
        ] {
            assert_eq!(r(text), text);
        }
    }

    #[test]
    fn json_strings_and_keys_are_redacted_in_place() {
        let mut v = serde_json::json!({
            "line": "token=abc123def",
            "nested": ["bob@example.org", 3],
            "10.0.0.1": true,
        });
        Redactor::new().redact_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("abc123def") && !text.contains("bob@example.org"));
        assert!(!text.contains("10.0.0.1"), "{text}");
    }
}
