//! HTTPS by default: a self-signed certificate made on first start and kept in `<state_dir>/web/`
//! (`cert.pem`, and `key.pem` with mode 0600). Its SHA-256 fingerprint is what the owner compares in the
//! browser's warning the first time; the service prints it at start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

/// The server's TLS setup and what to tell the owner about it.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the certificate (DER), as `AB:CD:…`.
    pub fingerprint: String,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Loads the certificate from `dir`, or makes one for `names` (host names and addresses the box is
/// reached by) if there is none.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Tls, String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        fs::create_dir_all(dir).map_err(|e| err("creating", dir, e))?;
        let mut names = names.to_vec();
        if names.is_empty() {
            names.push("offsite.local".into());
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("making a self-signed certificate: {e}"))?;
        write_new(
            &key_path,
            made.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_new(&cert_path, made.cert.pem().as_bytes(), 0o644)?;
    }
    let cert =
        CertificateDer::from_pem_file(&cert_path).map_err(|e| err("reading", &cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| err("reading", &key_path, e))?;
    let fingerprint = sha2::Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| err("using", &cert_path, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// Writes `path` anew with `mode` (both files are made together: what an interrupted first start left is
/// replaced).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err("creating", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err("writing", path, e))
}
