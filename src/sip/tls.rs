//! SIP over TLS (RFC 3261 §26.2): the server's certificate, and the acceptor each new
//! TLS connection is handshaken with.
//!
//! The certificate comes from the files in `tls:`; without them, a `tls:` listener gets
//! a self-signed certificate made at the first start under `DATA_DIR/tls/` and kept
//! there, which is for trying things out (phones must be told to trust it). The files
//! are read again on SIGHUP: new connections get the new certificate, connections
//! already up keep theirs. A reload that fails keeps the old certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::{Config, TlsFiles, Transport};

/// The certificate in use, swapped on reload.
pub struct TlsIdentity {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsIdentity {
    /// The identity for the configuration's `tls:` listeners; `None` without any.
    pub fn load(config: &Config) -> anyhow::Result<Option<Arc<TlsIdentity>>> {
        if !config
            .listeners
            .iter()
            .any(|l| l.transport == Transport::Tls)
        {
            return Ok(None);
        }
        let files = match &config.tls {
            Some(files) => files.clone(),
            None => self_signed(&config.data_dir.join("tls"), config)?,
        };
        let acceptor = RwLock::new(acceptor(&files)?);
        info!(certificate = %files.certificate.display(), "TLS certificate loaded");
        Ok(Some(Arc::new(TlsIdentity { files, acceptor })))
    }

    /// What the next connection is handshaken with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the certificate files again (SIGHUP).
    pub fn reload(&self) {
        match acceptor(&self.files) {
            Ok(new) => {
                *self
                    .acceptor
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
                info!(certificate = %self.files.certificate.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "TLS certificate not reloaded; keeping the old one")
            }
        }
    }

    pub fn certificate_path(&self) -> &Path {
        &self.files.certificate
    }
}

fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|certs| certs.collect())
        .with_context(|| format!("reading certificates from {}", files.certificate.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        files.certificate.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key from {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable certificate",
                files.certificate.display(),
                files.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The self-signed certificate kept in `dir`, made if it is not there yet, for the names
/// phones reach this server by: the advertised address, `localhost` and loopback.
fn self_signed(dir: &Path, config: &Config) -> anyhow::Result<TlsFiles> {
    let files = TlsFiles {
        certificate: dir.join("self-signed-cert.pem"),
        key: dir.join("self-signed-key.pem"),
    };
    if files.certificate.is_file() && files.key.is_file() {
        return Ok(files);
    }
    let mut names = vec![
        config.advertise.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.dedup();
    let made = rcgen::generate_simple_self_signed(names)?;
    std::fs::create_dir_all(dir)?;
    write_private(&files.key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.certificate, made.cert.pem())?;
    warn!(
        certificate = %files.certificate.display(),
        "made a SELF-SIGNED TLS certificate, for testing only: set tls.certificate and \
         tls.key to a real one before phones outside the lab connect"
    );
    Ok(files)
}

fn write_private(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::parse(
            Path::new("t.yaml"),
            &format!(
                "sip:\n  listen: [\"tls:127.0.0.1:0\"]\nrtp: {{ ports: \"30000-30009\" }}\ndata_dir: \"{}\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let first = TlsIdentity::load(&config).unwrap().expect("a TLS listener");
        let pem = std::fs::read(first.certificate_path()).unwrap();
        let again = TlsIdentity::load(&config).unwrap().unwrap();
        assert_eq!(std::fs::read(again.certificate_path()).unwrap(), pem);
        let mode = std::fs::metadata(dir.path().join("tls/self-signed-key.pem"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o600, "the private key is the owner's only");
        // A broken file on reload keeps the old certificate serving.
        std::fs::write(first.certificate_path(), "not a certificate").unwrap();
        first.reload();
        let _still = first.acceptor();
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused_with_both_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_string()]).unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("a.pem"),
            key: dir.path().join("b.key"),
        };
        std::fs::write(&files.certificate, a.cert.pem()).unwrap();
        std::fs::write(&files.key, b.signing_key.serialize_pem()).unwrap();
        let err = format!(
            "{:#}",
            acceptor(&files).err().expect("mismatched key accepted")
        );
        assert!(err.contains("a.pem") && err.contains("b.key"), "{err}");
    }

    /// A client that trusts only `cert` completes a handshake with `identity`'s acceptor.
    async fn handshake_trusting(identity: &TlsIdentity, cert: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = identity.acceptor();
        let server = tokio::spawn(async move { acceptor.accept(b).await.is_ok() });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let client = connector.connect(name, a).await;
        if let Err(e) = &client {
            eprintln!("client handshake: {e}");
        }
        let client_ok = client.is_ok();
        let server_ok = server.await.unwrap();
        client_ok && server_ok
    }

    #[tokio::test]
    async fn sighup_puts_the_new_certificate_on_new_connections() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let make = || rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (old, new) = (make(), make());
        std::fs::write(&files.certificate, old.cert.pem()).unwrap();
        std::fs::write(&files.key, old.signing_key.serialize_pem()).unwrap();
        let identity = TlsIdentity {
            acceptor: RwLock::new(acceptor(&files).unwrap()),
            files: files.clone(),
        };
        assert!(handshake_trusting(&identity, &old.cert.pem()).await);
        assert!(!handshake_trusting(&identity, &new.cert.pem()).await);
        std::fs::write(&files.certificate, new.cert.pem()).unwrap();
        std::fs::write(&files.key, new.signing_key.serialize_pem()).unwrap();
        identity.reload();
        assert!(handshake_trusting(&identity, &new.cert.pem()).await);
        assert!(!handshake_trusting(&identity, &old.cert.pem()).await);
    }
}
