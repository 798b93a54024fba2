//! OpenSSH `known_hosts` files: lookup of a host's key, and appending a trusted line.
//!
//! Supported: plain host patterns (`host`, `[host]:port`, comma lists, `*`/`?` wildcards,
//! `!negation`), hashed entries (`|1|salt|hmac`), several keys and key types per host,
//! comments and blank lines, `@revoked` (a revoked key is refused). `@cert-authority` lines
//! are skipped: host certificates are not accepted, so such hosts must also have a plain key
//! line. Lines that cannot be parsed (unknown key types, garbage) are skipped, as OpenSSH does.
//!
//! Hosts are looked up by the name given in the target (not also by IP address, unlike
//! OpenSSH's `CheckHostIP`), lowercased; for ports other than 22 the name is `[host]:port`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use russh::keys::{HashAlg, PublicKey, PublicKeyBase64};

use crate::error::{Result, SshError};

/// A server host key, as presented during a connection.
#[derive(Debug, Clone)]
pub struct HostKeyInfo {
    /// Host name as given in the target.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The key itself.
    pub key: PublicKey,
    /// Key type, e.g. `ssh-ed25519`, `ssh-rsa`.
    pub key_type: String,
    /// `SHA256:base64` fingerprint, exactly as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The known_hosts line that trusts this key for this host/port (plain, not hashed).
    pub known_hosts_line: String,
}

impl HostKeyInfo {
    /// Describe `key` as presented by `host:port`.
    pub fn new(host: &str, port: u16, key: &PublicKey) -> Self {
        HostKeyInfo {
            host: host.to_string(),
            port,
            key: key.clone(),
            key_type: key_type(key),
            fingerprint: fingerprint(key),
            known_hosts_line: known_hosts_line(host, port, key),
        }
    }
}

/// Where a host key stands in a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// The key is listed for this host (1-based line).
    Trusted {
        /// Line of the matching entry.
        line: usize,
    },
    /// The host has no key of this type. `other_types` lists the types it is known with.
    Unknown {
        /// Key types known for this host (other than the presented one).
        other_types: Vec<String>,
    },
    /// The host is known with a different key of the same type.
    Changed {
        /// Line of the first known key of that type.
        line: usize,
        /// Fingerprint of that known key.
        expected_fingerprint: String,
    },
    /// The key is marked `@revoked`.
    Revoked {
        /// Line of the `@revoked` entry.
        line: usize,
    },
}

/// `SHA256:base64` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Key type name as written in known_hosts / authorized_keys (`ssh-ed25519`, `ssh-rsa`, ...).
pub fn key_type(key: &PublicKey) -> String {
    key.key_data().algorithm().as_str().to_string()
}

/// The name under which OpenSSH files a host: `host` for port 22, `[host]:port` otherwise.
pub fn host_entry_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// A plain known_hosts line trusting `key` for `host:port`.
pub fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> String {
    format!(
        "{} {} {}",
        host_entry_name(host, port),
        key_type(key),
        key.public_key_base64()
    )
}

/// A hashed (`|1|salt|hmac`) known_hosts line trusting `key` for `host:port`.
pub fn hashed_known_hosts_line(host: &str, port: u16, key: &PublicKey) -> Result<String> {
    let mut salt = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).map_err(|_| {
        SshError::Io {
            addr: format!("{host}:{port}"),
            action: "generating a salt for a hashed known_hosts entry",
            source: std::io::Error::other("system random number generator failed"),
        }
    })?;
    let mac = hmac_sha1(&salt, host_entry_name(host, port).as_bytes());
    Ok(format!(
        "|1|{}|{} {} {}",
        BASE64.encode(&salt),
        BASE64.encode(&mac),
        key_type(key),
        key.public_key_base64()
    ))
}

/// Append a line trusting `key` for `host:port` to the known_hosts file at `path` (created,
/// mode 0644, if missing; its parent directory must exist). With `hashed`, the host name is
/// stored hashed as OpenSSH's `HashKnownHosts yes` does. Returns the line written.
pub fn append_known_host(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    hashed: bool,
) -> Result<String> {
    let line = if hashed {
        hashed_known_hosts_line(host, port, key)?
    } else {
        known_hosts_line(host, port, key)
    };
    let err = |action, source| SshError::KnownHosts {
        path: path.to_path_buf(),
        action,
        source,
    };
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o644);
    }
    let mut file = opts.open(path).map_err(|e| err("opening for append", e))?;
    // Make sure the new entry starts on a line of its own.
    let mut existing = Vec::new();
    file.read_to_end(&mut existing)
        .map_err(|e| err("reading", e))?;
    let mut out = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        out.push('\n');
    }
    out.push_str(&line);
    out.push('\n');
    file.write_all(out.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err("appending", e))?;
    tracing::debug!(path = %path.display(), host, port, "appended known_hosts entry");
    Ok(line)
}

/// Look up `key` for `host:port` in the known_hosts file at `path`. A missing file counts as
/// empty (every host unknown).
pub fn check_known_hosts(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<HostKeyStatus> {
    let entries = read_entries(path, host, port)?;
    Ok(status_of(&entries, key))
}

/// Key types that `path` lists for `host:port` (excluding revoked/CA lines), in file order.
pub(crate) fn known_key_types(path: &Path, host: &str, port: u16) -> Result<Vec<String>> {
    let entries = read_entries(path, host, port)?;
    let mut types: Vec<String> = Vec::new();
    for e in entries.iter().filter(|e| e.marker == Marker::None) {
        let t = key_type(&e.key);
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    marker: Marker,
    key: PublicKey,
}

fn status_of(entries: &[Entry], key: &PublicKey) -> HostKeyStatus {
    if let Some(e) = entries
        .iter()
        .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
    {
        return HostKeyStatus::Revoked { line: e.line };
    }
    let plain = || entries.iter().filter(|e| e.marker == Marker::None);
    if let Some(e) = plain().find(|e| e.key.key_data() == key.key_data()) {
        return HostKeyStatus::Trusted { line: e.line };
    }
    let wanted = key_type(key);
    if let Some(e) = plain().find(|e| key_type(&e.key) == wanted) {
        return HostKeyStatus::Changed {
            line: e.line,
            expected_fingerprint: fingerprint(&e.key),
        };
    }
    let mut other_types: Vec<String> = Vec::new();
    for e in plain() {
        let t = key_type(&e.key);
        if !other_types.contains(&t) {
            other_types.push(t);
        }
    }
    HostKeyStatus::Unknown { other_types }
}

fn read_entries(path: &Path, host: &str, port: u16) -> Result<Vec<Entry>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(SshError::KnownHosts {
                path: PathBuf::from(path),
                action: "reading",
                source,
            });
        }
    };
    Ok(parse_entries(&text, &host_entry_name(host, port)))
}

/// Entries of `text` that apply to the (already normalised) host `name`.
fn parse_entries(text: &str, name: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        let mut marker = Marker::None;
        if let Some(m) = first.strip_prefix('@') {
            match m {
                "revoked" => marker = Marker::Revoked,
                "cert-authority" => {
                    tracing::debug!(line = idx + 1, "skipping @cert-authority known_hosts line");
                    continue;
                }
                _ => continue,
            }
            let Some(next) = fields.next() else {
                continue;
            };
            first = next;
        }
        let (Some(ktype), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_field_matches(first, name) {
            continue;
        }
        match PublicKey::from_openssh(&format!("{ktype} {b64}")) {
            Ok(key) => out.push(Entry {
                line: idx + 1,
                marker,
                key,
            }),
            Err(e) => {
                tracing::debug!(line = idx + 1, error = %e, "skipping unparsable known_hosts key");
            }
        }
    }
    out
}

/// OpenSSH `match_hostname` semantics for the host field of one line.
fn hosts_field_matches(field: &str, name: &str) -> bool {
    if let Some(rest) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = rest.split_once('|') else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (
            BASE64.decode(salt.as_bytes()),
            BASE64.decode(hash.as_bytes()),
        ) else {
            return false;
        };
        let mac = hmac_sha1(&salt, name.as_bytes());
        // Not secret, but compare without early exit anyway.
        return mac.len() == hash.len()
            && mac.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    }
    let mut matched = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcard match.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    ring::hmac::sign(&key, msg).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn ed1() -> PublicKey {
        PublicKey::from_openssh(ED1).unwrap()
    }

    fn ed2() -> PublicKey {
        let seed = [7u8; 32];
        let kp = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
        PublicKey::from(kp.public)
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"*.example.com", b"a.example.com"));
        assert!(!glob_match(b"*.example.com", b"example.com"));
        assert!(glob_match(b"h?st", b"host"));
        assert!(glob_match(b"[h*]:2222", b"[host]:2222"));
        assert!(!glob_match(b"host", b"hostx"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
    }

    #[test]
    fn plain_port_and_negation() {
        let text =
            format!("# comment\n\nhost,other {ED1}\n[host]:2222 {ED1} c\n*.lan,!bad.lan {ED1}\n");
        assert_eq!(parse_entries(&text, "host").len(), 1);
        assert_eq!(parse_entries(&text, "[host]:2222").len(), 1);
        assert_eq!(parse_entries(&text, "[host]:2223").len(), 0);
        assert_eq!(parse_entries(&text, "good.lan").len(), 1);
        assert_eq!(parse_entries(&text, "bad.lan").len(), 0);
    }

    #[test]
    fn hashed_entry_matches() {
        let key = ed1();
        let line = hashed_known_hosts_line("Box.Example", 2222, &key).unwrap();
        let entries = parse_entries(&line, &host_entry_name("box.example", 2222));
        assert_eq!(entries.len(), 1);
        assert!(parse_entries(&line, &host_entry_name("box.example", 22)).is_empty());
        // Vector from `ssh-keygen -H` for "[box.example]:2222".
        let hashed = "|1|GwNbtze0OoKtnj/g9jcePrZDv6I=|gpMVvc+YLG5BW1GuBNob5ojo0iE=";
        assert!(hosts_field_matches(hashed, "[box.example]:2222"));
        assert!(!hosts_field_matches(hashed, "box.example"));
    }

    #[test]
    fn statuses() {
        let (k1, k2) = (ed1(), ed2());
        let t1 = format!("host {ED1}\n");
        let e = parse_entries(&t1, "host");
        assert_eq!(status_of(&e, &k1), HostKeyStatus::Trusted { line: 1 });
        assert!(matches!(
            status_of(&e, &k2),
            HostKeyStatus::Changed { line: 1, .. }
        ));
        let revoked = format!("@revoked * {ED1}\nhost {ED1}\n");
        let e = parse_entries(&revoked, "host");
        assert_eq!(status_of(&e, &k1), HostKeyStatus::Revoked { line: 1 });
        let ca = format!("@cert-authority * {ED1}\nnotme {ED1}\n");
        let e = parse_entries(&ca, "host");
        assert_eq!(
            status_of(&e, &k1),
            HostKeyStatus::Unknown {
                other_types: vec![]
            }
        );
        let garbage = "host ssh-foo AAAA\nhost\n@revoked\n";
        assert!(parse_entries(garbage, "host").is_empty());
    }
}
