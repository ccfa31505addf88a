//! Configuration of push recipients' endpoints (`[recipients.push]`) and of the push workers
//! (`[push]`): what a push recipient's policy (`[delivery] kind = "push"`) needs to be reached.

use super::SecretSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The HTTPS endpoint of a push recipient.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// `https://…` URL the items are POSTed to. `http://` only for a loopback host.
    pub url: String,
    /// PEM file with the CA certificates that may sign the recipient's server certificate;
    /// default: the system's root certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain Weiche presents as its client certificate (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Shared secret of the `X-Weiche-Signature` HMAC-SHA512 (at least 32 characters; its
    /// bytes are the HMAC key).
    pub secret: SecretSource,
    /// Seconds one request may take, connecting included, before it counts as a timeout
    /// (retried).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

/// The push workers of this process (`[push]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushWorkerConfig {
    /// How long a process's claim on a recipient's lane lasts without renewal, in seconds; a
    /// crashed process's lanes are taken over after this. Must exceed every recipient's
    /// `timeout_secs`.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// How often idle lanes are looked at, in milliseconds (new items, due retries, lanes to
    /// take over).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
}

fn default_lease() -> u64 {
    60
}

fn default_poll() -> u64 {
    200
}

impl Default for PushWorkerConfig {
    fn default() -> Self {
        PushWorkerConfig {
            lease_secs: default_lease(),
            poll_ms: default_poll(),
        }
    }
}

/// A push endpoint after loading: paths resolved, secret read.
#[derive(Clone)]
pub struct PushEndpoint {
    /// URL.
    pub url: String,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// HMAC key.
    pub secret: secrecy::SecretSlice<u8>,
    /// Request timeout.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for PushEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushEndpoint")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .field("secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PushConfig {
    /// Resolves paths against `base` and reads the secret (relative secret files against
    /// `secret_base`); the first problem as a message.
    pub fn build(&self, base: &Path, secret_base: &Path) -> Result<PushEndpoint, String> {
        let resolve = |p: &PathBuf| {
            if p.is_relative() {
                base.join(p)
            } else {
                p.clone()
            }
        };
        let lower = self.url.to_ascii_lowercase();
        let loopback_http = lower.starts_with("http://")
            && url_host(&self.url).is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        if !lower.starts_with("https://") && !loopback_http {
            return Err(format!(
                "url '{}': must be https:// (http:// only for a loopback host)",
                self.url
            ));
        }
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
            (None, None) => None,
            _ => return Err("client_cert_file and client_key_file go together".into()),
        };
        if self.timeout_secs == 0 {
            return Err("timeout_secs must be at least 1".into());
        }
        let secret = super::principals::secret_raw(&self.secret, secret_base)
            .map_err(|m| format!("secret: {m}"))?;
        if secret.len() < 32 {
            return Err("secret: at least 32 characters".into());
        }
        Ok(PushEndpoint {
            url: self.url.clone(),
            ca_file: self.ca_file.as_ref().map(resolve),
            client_identity,
            secret: secret.into(),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        })
    }
}

/// The host part of an `http(s)://host[:port]/…` URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_found() {
        assert_eq!(url_host("https://a.example:8443/x"), Some("a.example"));
        assert_eq!(url_host("http://127.0.0.1:9/"), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:9/"), Some("::1"));
        assert_eq!(url_host("http://u@localhost/"), Some("localhost"));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let cfg = |url: &str| PushConfig {
            url: url.into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            secret: SecretSource {
                file: None,
                env: Some("WEICHE_TEST_PUSH_SECRET_UNSET".into()),
                sha256: None,
                generate: false,
            },
            timeout_secs: 5,
        };
        let err = cfg("http://jobcenter.example/in").build(Path::new("."), Path::new("."));
        assert!(err.unwrap_err().contains("https"));
        // Loopback http passes the URL check and fails on the (unset) secret instead.
        let err = cfg("http://127.0.0.1:9/in").build(Path::new("."), Path::new("."));
        assert!(err.unwrap_err().starts_with("secret"));
    }
}
