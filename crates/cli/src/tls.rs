//! HTTPS for `relay serve` (`[server.tls]`): rustls with the certificate and key read from PEM
//! files, and read again when they change (a certbot renewal), without a restart and without
//! dropping a connection. A renewal that does not load (a half-written file, a key that does
//! not match) keeps the certificate in use and says so in the log.

use anyhow::Context;
use relay_core::config::TlsSection;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The certificate in use, swapped when its files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{} is not a usable private key", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} does not belong to {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// When a file last changed (none if it cannot be read now).
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The acceptor for `[server.tls]`; a task watches the files until the process ends.
pub fn acceptor(tls: &TlsSection) -> anyhow::Result<TlsAcceptor> {
    let (cert, key) = (PathBuf::from(&tls.cert_file), PathBuf::from(&tls.key_file));
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(load(&cert, &key)?)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let every = Duration::from_secs(tls.reload_secs.unwrap_or(60));
    tokio::spawn(async move {
        let mut seen = (modified(&cert), modified(&key));
        loop {
            tokio::time::sleep(every).await;
            let now = (modified(&cert), modified(&key));
            if now == seen {
                continue;
            }
            match load(&cert, &key) {
                Ok(fresh) => {
                    *resolver.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                    seen = now;
                    tracing::info!("TLS certificate reloaded");
                }
                // Perhaps caught half-written: tried again at the next check.
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "TLS certificate changed but does not load; keeping the current one")
                }
            }
        }
    });
    Ok(TlsAcceptor::from(Arc::new(config)))
}
