//! Client key pairs: loading an OpenSSH private key, generating a new ed25519 key pair.

use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use zeroize::Zeroizing;

use crate::error::{Result, SshError};
use crate::known_hosts::fingerprint;

/// Load a private key file (OpenSSH format, also PEM PKCS#1/PKCS#8). An encrypted key needs
/// `passphrase`; without it (or with a wrong one) the error is [`SshError::IdentityEncrypted`].
pub fn load_identity(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey> {
    let text = std::fs::read_to_string(path).map_err(|e| SshError::Identity {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    match russh::keys::decode_secret_key(&text, passphrase) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(SshError::IdentityEncrypted {
            path: path.to_path_buf(),
            passphrase_given: passphrase.is_some(),
        }),
        // A wrong passphrase shows up as a decryption/padding/checkint failure.
        Err(e) if text.contains("ENCRYPTED") || is_encrypted_openssh(&text) => {
            tracing::debug!(error = %e, "decrypting the identity failed");
            Err(SshError::IdentityEncrypted {
                path: path.to_path_buf(),
                passphrase_given: passphrase.is_some(),
            })
        }
        Err(e) => Err(SshError::Identity {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn is_encrypted_openssh(text: &str) -> bool {
    PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted())
}

/// A freshly generated key pair, as written by [`generate_ed25519_keypair`].
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The private key file (mode 0600).
    pub private_key_path: PathBuf,
    /// The public key file (`<private>.pub`).
    pub public_key_path: PathBuf,
    /// The `authorized_keys` line for the server: `ssh-ed25519 AAAA... comment`.
    pub authorized_keys_line: String,
    /// `SHA256:...` fingerprint of the new key.
    pub fingerprint: String,
}

/// Generate a new ed25519 key pair and write it in OpenSSH format: the private key to `path`
/// (created with mode 0600, unencrypted) and the public key to `path` + `.pub`. Never
/// overwrites: fails if either file exists. Returns the `authorized_keys` line.
pub fn generate_ed25519_keypair(path: &Path, comment: &str) -> Result<GeneratedKey> {
    let err = |action: &'static str, reason: String| SshError::KeyGen {
        path: path.to_path_buf(),
        action,
        reason,
    };
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if pub_path.exists() {
        return Err(err(
            "refusing to overwrite",
            format!("{} already exists", pub_path.display()),
        ));
    }

    let mut seed = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed[..])
        .map_err(|_| err("generating", "system random number generator failed".into()))?;
    let keypair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(KeypairData::Ed25519(keypair), comment)
        .map_err(|e| err("generating", e.to_string()))?;
    let private_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err("encoding", e.to_string()))?;
    let public_line = key
        .public_key()
        .to_openssh()
        .map_err(|e| err("encoding", e.to_string()))?;

    write_new(path, private_text.as_bytes(), 0o600)
        .map_err(|e| err("writing the private key", e.to_string()))?;
    if let Err(e) = write_new(&pub_path, format!("{public_line}\n").as_bytes(), 0o644) {
        // Do not leave a private key without its public half behind.
        let _ = std::fs::remove_file(path);
        return Err(err("writing the public key", e.to_string()));
    }
    tracing::debug!(path = %path.display(), "generated ed25519 key pair");
    Ok(GeneratedKey {
        private_key_path: path.to_path_buf(),
        public_key_path: pub_path,
        authorized_keys_line: public_line,
        fingerprint: fingerprint(key.public_key()),
    })
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}
