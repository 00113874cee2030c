//! Bearer tokens: who may call what.
//!
//! A token file holds one line per token, `<client> <role> sha256:<hex>`, with `#` comments:
//! only the SHA-256 of each token is at rest, so the file (or the Secret it comes from) does not
//! give anyone a usable credential. `kiln token new` prints a fresh token and its line. A
//! presented token is hashed and compared against every entry in constant time.
//!
//! Roles: `infer` may call the inference API; `admin` may also change the cluster (model
//! repository load/unload on the gateway, `kiln.v1.Admin` on the monitor).

use std::fmt;
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Inference and read-only metadata.
    Infer,
    /// Everything `Infer` may, plus changing the cluster.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Infer => "infer",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "infer" => Some(Role::Infer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A token file entry that a presented token matched.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub client: String,
    pub role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("client", &self.client)
            .field("role", &self.role)
            .field("digest", &"<redacted>")
            .finish()
    }
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file line {line}: {reason} (expected `<client> <infer|admin> sha256:<64 hex>`)")]
    Line { line: usize, reason: String },
    #[error("the token file holds no tokens")]
    Empty,
}

/// The tokens a server accepts.
#[derive(Clone, Debug)]
pub struct TokenBook {
    entries: Vec<Entry>,
}

/// SHA-256 of a token, as it is stored.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (256 bits) and its token-file line for `client` with `role`.
pub fn new_token(client: &str, role: Role) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("kiln_{}", hex::encode(bytes));
    let line = format!(
        "{client} {} sha256:{}",
        role.name(),
        hex::encode(digest(&token))
    );
    (token, line)
}

/// The text of a token file.
pub fn read_file(path: &Path) -> Result<String, TokenFileError> {
    std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TokenBook {
    /// Parses token-file text (lines, or `;`-separated entries when given inline by env).
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut entries = Vec::new();
        for (n, raw) in text.split(['\n', ';']).enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| TokenFileError::Line {
                line: n + 1,
                reason: reason.to_owned(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [client, role, hash] = fields[..] else {
                return Err(bad("want three fields"));
            };
            let role = Role::parse(role).ok_or_else(|| bad("unknown role"))?;
            let hex = hash
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("the hash must start with sha256:"))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex, &mut digest).map_err(|_| bad("not 64 hex digits"))?;
            entries.push(Entry {
                client: client.to_owned(),
                role,
                digest,
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { entries })
    }

    /// Reads a token file.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        Self::parse(&read_file(path)?)
    }

    /// The entry `token` belongs to. Every entry is compared, each in constant time.
    pub fn verify(&self, token: &str) -> Option<&Entry> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
    }

    /// How many tokens the book holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_verify_against_their_line() {
        let (token, line) = new_token("svc-a", Role::Infer);
        let (admin, admin_line) = new_token("ops", Role::Admin);
        let book =
            TokenBook::parse(&format!("# comment\n{line}\n\n{admin_line}  # ops\n")).unwrap();
        assert_eq!(book.len(), 2);
        let e = book.verify(&token).unwrap();
        assert_eq!((e.client.as_str(), e.role), ("svc-a", Role::Infer));
        assert_eq!(book.verify(&admin).unwrap().role, Role::Admin);
        assert!(book.verify("kiln_wrong").is_none());
        assert!(book.verify("").is_none());
        assert!(!format!("{e:?}").contains(&hex::encode(digest(&token))));
    }

    #[test]
    fn inline_entries_split_on_semicolons() {
        let (_, a) = new_token("a", Role::Infer);
        let (_, b) = new_token("b", Role::Admin);
        assert_eq!(TokenBook::parse(&format!("{a};{b}")).unwrap().len(), 2);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        for (text, want) in [
            ("a infer", "line 1: want three fields"),
            ("a root sha256:00", "unknown role"),
            (
                "\na infer md5:00",
                "line 2: the hash must start with sha256:",
            ),
            ("a infer sha256:zz", "not 64 hex digits"),
            ("# nothing\n", "no tokens"),
        ] {
            let err = TokenBook::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
