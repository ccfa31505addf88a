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

/// Every configured principal with its token hash.
#[derive(Default)]
pub struct Principals {
    entries: Vec<(Principal, [u8; 32])>,
}

impl std::fmt::Debug for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Principals {
    /// Adds a principal; ids must be unique and tokens distinct.
    pub fn add(&mut self, id: &str, role: Role, hash: [u8; 32]) -> Result<(), String> {
        if self.entries.iter().any(|(p, _)| p.id == id) {
            return Err(format!("principal id '{id}' is configured twice"));
        }
        if self.entries.iter().any(|(_, h)| bool::from(h.ct_eq(&hash))) {
            return Err(format!(
                "principal '{id}' shares its token with another principal"
            ));
        }
        self.entries.push((
            Principal {
                id: id.to_string(),
                role,
            },
            hash,
        ));
        Ok(())
    }

    /// The principal a bearer token belongs to. Compares against every entry in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (p, h) in &self.entries {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(p.clone());
            }
        }
        found
    }

    /// All principals.
    pub fn all(&self) -> impl Iterator<Item = &Principal> {
        self.entries.iter().map(|(p, _)| p)
    }
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
    let Some(file) = &src.file else {
        return Err("sha256 is not a readable secret".into());
    };
    let path = if file.is_relative() {
        base.join(file)
    } else {
        file.clone()
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

/// A binary secret given as hex.
pub(super) fn secret_bytes(src: &super::SecretSource, base: &Path) -> Result<Vec<u8>, String> {
    let (text, _) = secret_text(src, base)?;
    hex::decode(&text).map_err(|_| "the secret must be hex".to_string())
}
