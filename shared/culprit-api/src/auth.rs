//! Bearer tokens: who may read incidents, and who may also write feedback and recalculate.
//!
//! Tokens come from the `CULPRIT_API_TOKENS` environment variable or, when it is unset, from the
//! file `api.tokens_file` (a Kubernetes Secret mounted as a file or as an env var) — never from
//! the configuration file, which is not a secret. Both hold entries `name:scope:secret`,
//! separated by newlines or commas; `#` starts a comment line. The name is who the token belongs
//! to: it becomes the author of the feedback given with it.
//!
//! A presented token is hashed and compared with every configured token's hash in constant
//! time, all of them each time, so neither the secret's bytes, its length nor its position in
//! the list shows in the response time.

use crate::{ApiConfig, ApiError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Environment variable the tokens are read from (preferred over `api.tokens_file`).
pub const TOKENS_ENV: &str = "CULPRIT_API_TOKENS";
/// Shortest secret accepted: a guessable token is no protection.
pub const MIN_SECRET_LEN: usize = 16;

/// What a token allows. `Write` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Incidents, history, baselines, the dashboard's data.
    Read,
    /// Also feedback and baseline recalculation.
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    /// Whether a token of this scope may do what `needed` guards.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// The authenticated caller of a request, available to handlers as a request extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// The token's name: the author of what this request writes.
    pub name: String,
    pub scope: Scope,
}

struct Token {
    name: String,
    scope: Scope,
    digest: [u8; 32],
}

/// The configured tokens. Cheap to clone; `Debug` shows names and scopes, never secrets.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Arc<[Token]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| (&t.name, t.scope)))
            .finish()
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Tokens {
    /// No tokens: every protected request is refused.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Tokens from [`TOKENS_ENV`], or else from `config.tokens_file`, or none.
    pub fn load(config: &ApiConfig) -> Result<Tokens, ApiError> {
        Tokens::load_with(config, |name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with the environment supplied by the caller.
    pub fn load_with(
        config: &ApiConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Tokens, ApiError> {
        if let Some(text) = env(TOKENS_ENV).filter(|t| !t.trim().is_empty()) {
            return Tokens::parse(&text, TOKENS_ENV);
        }
        match &config.tokens_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ApiError::TokensFile {
                        path: path.clone(),
                        source,
                    })?;
                Tokens::parse(&text, &path.display().to_string())
            }
            None => Ok(Tokens::none()),
        }
    }

    /// Parses `name:scope:secret` entries separated by newlines or commas. `origin` names where
    /// the text came from in errors, which never quote a secret.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, ApiError> {
        let bad = |n: usize, message: String| ApiError::Tokens {
            origin: origin.to_string(),
            message: format!("entry {n}: {message}"),
        };
        let mut tokens: Vec<Token> = Vec::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let n = i + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(scope), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(n, "expected name:scope:secret".into()));
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(bad(
                    n,
                    format!("name {name:?} must be letters, digits, '.', '_', '@' or '-'"),
                ));
            }
            if name == crate::baselines::SCHEDULE_AUTHOR {
                return Err(bad(
                    n,
                    format!("the name {name:?} is reserved for scheduled recalculations"),
                ));
            }
            let scope = match scope.trim() {
                "read" => Scope::Read,
                "write" => Scope::Write,
                other => {
                    return Err(bad(
                        n,
                        format!("token {name}: scope {other:?} is neither read nor write"),
                    ))
                }
            };
            let secret = secret.trim();
            // Commas separate entries, so a secret cannot hold one.
            if secret.chars().count() < MIN_SECRET_LEN || secret.chars().any(char::is_whitespace) {
                return Err(bad(
                    n,
                    format!(
                        "token {name}: the secret must be at least {MIN_SECRET_LEN} characters without spaces or commas"
                    ),
                ));
            }
            let digest = digest(secret.as_bytes());
            if tokens.iter().any(|t| t.name == name) {
                return Err(bad(n, format!("token name {name} appears twice")));
            }
            if tokens.iter().any(|t| t.digest == digest) {
                return Err(bad(
                    n,
                    format!("token {name} has the same secret as another token"),
                ));
            }
            tokens.push(Token {
                name: name.to_string(),
                scope,
                digest,
            });
        }
        Ok(Tokens {
            tokens: tokens.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The caller a presented secret belongs to, if any.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        // No early exit: every token is compared, whichever matches.
        for token in self.tokens.iter() {
            if bool::from(token.digest.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        found.map(|t| Caller {
            name: t.name.clone(),
            scope: t.scope,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if it has that form.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn entries_parse_from_lines_and_commas_and_authenticate_by_secret() {
        let tokens = Tokens::parse(
            &format!("# on-call\nana:write:{A}\n\nbot:read:{B}, ci:read:x:yzzzzzzzzzzzzzzz\n"),
            "test",
        )
        .unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens.authenticate(A),
            Some(Caller {
                name: "ana".into(),
                scope: Scope::Write
            })
        );
        assert_eq!(tokens.authenticate(B).unwrap().name, "bot");
        // A secret may itself hold colons.
        assert_eq!(
            tokens.authenticate("x:yzzzzzzzzzzzzzzz").unwrap().name,
            "ci"
        );
        assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.authenticate(""), None);
    }

    #[test]
    fn bad_entries_are_rejected_without_echoing_the_secret() {
        for (text, expect) in [
            ("ana:write", "expected name:scope:secret"),
            ("ana:admin:aaaaaaaaaaaaaaaaaaaa", "neither read nor write"),
            ("ana:read:short-secret", "at least 16"),
            ("an a:read:aaaaaaaaaaaaaaaaaaaa", "must be letters"),
            (
                "ana:read:aaaaaaaaaaaaaaaaaaaa\nana:write:bbbbbbbbbbbbbbbbbbbb",
                "appears twice",
            ),
            (
                "ana:read:aaaaaaaaaaaaaaaaaaaa\nbo:write:aaaaaaaaaaaaaaaaaaaa",
                "same secret",
            ),
        ] {
            let err = Tokens::parse(text, "CULPRIT_API_TOKENS")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{text}: {err}");
            assert!(err.contains("CULPRIT_API_TOKENS"), "{err}");
            assert!(!err.contains("aaaaaaaaaaaa"), "secret leaked: {err}");
        }
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("file-user:read:{A}\n")).unwrap();
        let config = ApiConfig {
            tokens_file: Some(path),
            ..ApiConfig::default()
        };
        let from_file = Tokens::load_with(&config, |_| None).unwrap();
        assert_eq!(from_file.authenticate(A).unwrap().name, "file-user");
        let from_env = Tokens::load_with(&config, |_| Some(format!("env-user:write:{B}"))).unwrap();
        assert_eq!(from_env.authenticate(B).unwrap().name, "env-user");
        assert!(from_env.authenticate(A).is_none());
        let missing = ApiConfig {
            tokens_file: Some(dir.path().join("absent")),
            ..ApiConfig::default()
        };
        assert!(matches!(
            Tokens::load_with(&missing, |_| None),
            Err(ApiError::TokensFile { .. })
        ));
        assert!(Tokens::load_with(&ApiConfig::default(), |_| None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let tokens = Tokens::parse(&format!("ana:write:{A}"), "t").unwrap();
        let shown = format!("{tokens:?}");
        assert!(shown.contains("ana") && !shown.contains(A), "{shown}");
    }
}
