//! TLS for both directions (quality.md, Security): the server's HTTPS and the push clients' HTTPS,
//! with rustls: TLS 1.2 and 1.3 only, BSI TR-02102-2 cipher suites
//! and groups, certificate and key from PEM files (re-read when they change), and — with a
//! client CA — client certificates whose SHA-256 fingerprint identifies a vendor.
//!
//! The crypto provider is rustls' `ring` provider, cut down to:
//! - TLS 1.3: `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256`;
//! - TLS 1.2: `TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{256,128}_GCM_SHA{384,256}`;
//! - key exchange: secp384r1 and secp256r1 (ChaCha20-Poly1305 and X25519 are not among the
//!   TR-02102-2 recommendations).

use crate::config::TlsSettings;
use actix_web::dev::Extensions;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, the certificate and key files are checked for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// The verified client certificate of a connection: SHA-256 of the DER of the leaf (the first
/// certificate the peer sent). Kept in the connection data (`HttpRequest::conn_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the leaf certificate's DER.
    pub sha256: [u8; 32],
}

/// The SHA-256 of a certificate's DER (what `cert_sha256` of a vendor holds).
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The `ring` provider restricted to the BSI TR-02102-2 cipher suites and groups.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::SECP384R1, kx_group::SECP256R1],
        ..default_provider()
    }
}

/// Builds the server's TLS configuration: reads certificate, key and client CA now (so a bad
/// file is a configuration problem), and re-reads certificate and key when they change.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(provider());
    let certs = ReloadingCert::new(&settings.cert, &settings.key, provider.clone())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            }
            // Callers without a certificate still connect (and authenticate by token); a
            // certificate they do present must chain to the client CA.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(certs))))
}

/// `HttpServer::on_connect`: stores the fingerprint of a TLS client's leaf certificate.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        let (_, session) = tls.get_ref();
        if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
            ext.insert(ClientCertificate {
                sha256: fingerprint(leaf),
            });
        }
    }
}

/// All certificates of a PEM file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Certificate chain and matching key.
fn load_certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = load_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, der, provider)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// Modification time and length of a file, to notice changes.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Serves the certificate from `cert`/`key`, re-reading them (at most once a second, on a
/// handshake) when their modification time or size changed. A pair that fails to load is
/// logged and the previous one kept.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: Instant,
}

impl ReloadingCert {
    fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let stamps = (stamp(cert), stamp(key));
        let current = Arc::new(load_certified(cert, key, &provider)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new(State {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != state.stamps {
                // Remembered even when loading fails, so a half-written pair is tried again
                // on the next change rather than every second.
                state.stamps = stamps;
                match load_certified(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        tracing::info!("TLS certificate reloaded from {}", self.cert.display());
                        state.current = Arc::new(k);
                    }
                    Err(e) => tracing::warn!(
                        "TLS certificate changed but cannot be loaded, keeping the previous one: {e}"
                    ),
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
