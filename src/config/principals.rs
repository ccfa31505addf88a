//! Principals (vendors, recipients, admins) and their credentials. Tokens are kept only as
//! SHA-256 hashes and compared in constant time; secrets are read from files or the environment.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A principal's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Posts deliveries.
    Vendor,
    /// Pulls batches (or receives pushes).
    Recipient,
    /// Administers.
    Admin,
}

impl Role {
    /// Spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vendor => "vendor",
            Role::Recipient => "recipient",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Configured id.
    pub id: String,
    /// Role.
    pub role: Role,
}

/// Which credentials a principal must present (`auth` of a vendor; every other principal uses
/// a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum AuthMode {
    /// A bearer token.
    #[default]
    #[serde(rename = "token")]
    Token,
    /// A TLS client certificate with the configured SHA-256 fingerprint, instead of a token.
    #[serde(rename = "certificate")]
    Certificate,
    /// Both the token and the client certificate, naming the same principal.
    #[serde(rename = "token+certificate")]
    TokenAndCertificate,
}

impl AuthMode {
    /// Spelling in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::Certificate => "certificate",
            AuthMode::TokenAndCertificate => "token+certificate",
        }
    }

    /// Whether a client certificate is required.
    pub fn needs_certificate(self) -> bool {
        self != AuthMode::Token
    }

    /// Whether a token is required.
    pub fn needs_token(self) -> bool {
        self != AuthMode::Certificate
    }
}

/// One principal with its credentials.
struct Entry {
    principal: Principal,
    /// SHA-256 of the bearer token.
    token: Option<[u8; 32]>,
    /// SHA-256 of the client certificate's DER.
    cert: Option<[u8; 32]>,
    auth: AuthMode,
}

/// Every configured principal with its token hash and certificate fingerprint.
#[derive(Default)]
pub struct Principals {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.principal))
            .finish()
    }
}

impl Principals {
    /// Adds a principal authenticated by token; ids must be unique and tokens distinct.
    pub fn add(&mut self, id: &str, role: Role, hash: [u8; 32]) -> Result<(), String> {
        self.add_credentials(id, role, Some(hash), None, AuthMode::Token)
    }

    /// Adds a principal with a token hash and/or a client-certificate fingerprint (SHA-256 of
    /// the certificate's DER) and the rule which of them it must present. Ids must be unique,
    /// tokens and fingerprints distinct, and the credentials `auth` needs present.
    pub fn add_credentials(
        &mut self,
        id: &str,
        role: Role,
        token: Option<[u8; 32]>,
        cert: Option<[u8; 32]>,
        auth: AuthMode,
    ) -> Result<(), String> {
        if self.entries.iter().any(|e| e.principal.id == id) {
            return Err(format!("principal id '{id}' is configured twice"));
        }
        if auth.needs_token() && token.is_none() {
            return Err(format!(
                "principal '{id}' has no token, which auth = \"{}\" needs",
                auth.as_str()
            ));
        }
        if auth.needs_certificate() && cert.is_none() {
            return Err(format!(
                "principal '{id}' has no cert_sha256, which auth = \"{}\" needs",
                auth.as_str()
            ));
        }
        if let Some(hash) = &token
            && self
                .entries
                .iter()
                .any(|e| e.token.is_some_and(|h| bool::from(h.ct_eq(hash))))
        {
            return Err(format!(
                "principal '{id}' shares its token with another principal"
            ));
        }
        if let Some(fp) = &cert
            && self
                .entries
                .iter()
                .any(|e| e.cert.is_some_and(|c| bool::from(c.ct_eq(fp))))
        {
            return Err(format!(
                "principal '{id}' shares its client certificate with another principal"
            ));
        }
        self.entries.push(Entry {
            principal: Principal {
                id: id.to_string(),
                role,
            },
            token,
            cert,
            auth,
        });
        Ok(())
    }

    /// The principal a bearer token alone authenticates (no client certificate presented).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.resolve(Some(token), None)
    }

    /// The principal that a bearer token and/or a client-certificate fingerprint (SHA-256 of
    /// the leaf certificate's DER) authenticate, following the principal's [`AuthMode`]:
    ///
    /// - a token that matches nobody fails, whatever else is presented;
    /// - a certificate that matches nobody names nobody: it is ignored, so it never
    ///   authenticates anyone, and a token-only principal's token still works beside it;
    /// - token and certificate naming different principals fail;
    /// - then the named principal must have presented what its mode requires.
    ///
    /// Tokens and fingerprints are compared against every entry in constant time.
    pub fn resolve(&self, token: Option<&str>, cert: Option<&[u8; 32]>) -> Option<Principal> {
        let by_token = match token {
            Some(t) => {
                let hash: [u8; 32] = Sha256::digest(t.as_bytes()).into();
                Some(self.find(|e| e.token.as_ref(), &hash)?)
            }
            None => None,
        };
        let by_cert = cert.and_then(|fp| self.find(|e| e.cert.as_ref(), fp));
        let index = match (by_token, by_cert) {
            (Some(t), Some(c)) if t != c => return None,
            (Some(i), _) | (None, Some(i)) => i,
            (None, None) => return None,
        };
        let entry = &self.entries[index];
        let ok = match entry.auth {
            AuthMode::Token => by_token.is_some(),
            AuthMode::Certificate => by_cert.is_some(),
            AuthMode::TokenAndCertificate => by_token.is_some() && by_cert.is_some(),
        };
        ok.then(|| entry.principal.clone())
    }

    /// The index of the entry whose credential (picked by `field`) equals `value`.
    fn find(&self, field: impl Fn(&Entry) -> Option<&[u8; 32]>, value: &[u8; 32]) -> Option<usize> {
        let mut found = None;
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(v) = field(e)
                && bool::from(v.ct_eq(value))
            {
                found = Some(i);
            }
        }
        found
    }

    /// All principals.
    pub fn all(&self) -> impl Iterator<Item = &Principal> {
        self.entries.iter().map(|e| &e.principal)
    }
}

/// Parses a certificate fingerprint: 64 hex digits, upper or lower case, optionally separated
/// by colons (as `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    hex::decode(&digits)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            "cert_sha256 must be the SHA-256 of the certificate's DER: 64 hex digits".into()
        })
}

/// Reads a secret's text; with `generate`, creates a missing file with 256 random bits (hex).
/// Returns the text and, when it generated or used a generated file, its path.
fn secret_text(
    src: &super::SecretSource,
    base: &Path,
) -> Result<(String, Option<PathBuf>), String> {
    let set = [src.file.is_some(), src.env.is_some(), src.sha256.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        return Err("give exactly one of file, env, sha256".into());
    }
    if let Some(var) = &src.env {
        return std::env::var(var)
            .map(|v| (v.trim().to_string(), None))
            .map_err(|_| format!("environment variable {var} is not set"));
    }
    let Some(path) = secret_path(src, base) else {
        return Err("sha256 is not a readable secret".into());
    };
    if src.generate && !path.exists() {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_private(&path, &hex::encode(bytes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((text.trim().to_string(), src.generate.then_some(path)))
}

/// The file a secret is read from (`file`, relative paths against `base`); `None` for secrets
/// from the environment or given as a hash.
pub(super) fn secret_path(src: &super::SecretSource, base: &Path) -> Option<PathBuf> {
    let file = src.file.as_ref()?;
    Some(if file.is_relative() {
        base.join(file)
    } else {
        file.clone()
    })
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{text}\n"))
}

/// The SHA-256 of a token source; tokens must carry at least 128 bits (32 hex digits or more).
pub(super) fn token_hash(
    src: &super::SecretSource,
    base: &Path,
) -> Result<([u8; 32], Option<PathBuf>), String> {
    if let Some(h) = &src.sha256 {
        let bytes = hex::decode(h).map_err(|_| "sha256 must be 64 hex digits".to_string())?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "sha256 must be 64 hex digits".to_string())?;
        return Ok((arr, None));
    }
    let (text, generated) = secret_text(src, base)?;
    if text.len() < 32 {
        return Err("a token must have at least 128 bits (32 hex digits)".into());
    }
    Ok((Sha256::digest(text.as_bytes()).into(), generated))
}

/// A secret whose text is used as is (its UTF-8 bytes), e.g. a shared HMAC secret.
pub(super) fn secret_raw(src: &super::SecretSource, base: &Path) -> Result<Vec<u8>, String> {
    let (text, _) = secret_text(src, base)?;
    Ok(text.into_bytes())
}

/// A binary secret given as hex.
pub(super) fn secret_bytes(src: &super::SecretSource, base: &Path) -> Result<Vec<u8>, String> {
    let (text, _) = secret_text(src, base)?;
    hex::decode(&text).map_err(|_| "the secret must be hex".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(t: &str) -> [u8; 32] {
        Sha256::digest(t.as_bytes()).into()
    }

    #[test]
    fn resolve_follows_the_auth_mode() {
        let (a, b, c) = ([0xaa; 32], [0xbb; 32], [0xcc; 32]);
        let mut p = Principals::default();
        p.add("tok", Role::Vendor, sha("tok-token")).unwrap();
        p.add_credentials("cert", Role::Vendor, None, Some(a), AuthMode::Certificate)
            .unwrap();
        p.add_credentials(
            "both",
            Role::Vendor,
            Some(sha("both-token")),
            Some(b),
            AuthMode::TokenAndCertificate,
        )
        .unwrap();
        let id = |r: Option<Principal>| r.map(|p| p.id);
        // Token only.
        assert_eq!(id(p.resolve(Some("tok-token"), None)), Some("tok".into()));
        assert_eq!(
            id(p.resolve(Some("tok-token"), Some(&c))),
            Some("tok".into())
        );
        assert_eq!(id(p.resolve(Some("wrong"), None)), None);
        // Certificate only.
        assert_eq!(id(p.resolve(None, Some(&a))), Some("cert".into()));
        assert_eq!(id(p.resolve(Some("wrong"), Some(&a))), None);
        assert_eq!(id(p.resolve(Some("tok-token"), Some(&a))), None);
        assert_eq!(id(p.resolve(None, Some(&c))), None);
        assert_eq!(id(p.resolve(None, None)), None);
        // Both.
        assert_eq!(
            id(p.resolve(Some("both-token"), Some(&b))),
            Some("both".into())
        );
        assert_eq!(id(p.resolve(Some("both-token"), None)), None);
        assert_eq!(id(p.resolve(None, Some(&b))), None);
        assert_eq!(id(p.resolve(Some("both-token"), Some(&c))), None);
        assert_eq!(id(p.resolve(Some("both-token"), Some(&a))), None);
        assert_eq!(id(p.authenticate("both-token")), None);
    }

    #[test]
    fn credentials_are_checked_when_added() {
        let mut p = Principals::default();
        p.add_credentials(
            "c",
            Role::Vendor,
            None,
            Some([1; 32]),
            AuthMode::Certificate,
        )
        .unwrap();
        assert!(
            p.add_credentials(
                "d",
                Role::Vendor,
                None,
                Some([1; 32]),
                AuthMode::Certificate
            )
            .is_err()
        );
        assert!(
            p.add_credentials("e", Role::Vendor, None, None, AuthMode::Certificate)
                .is_err()
        );
        assert!(
            p.add_credentials("f", Role::Vendor, None, Some([2; 32]), AuthMode::Token)
                .is_err()
        );
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
    }
}
