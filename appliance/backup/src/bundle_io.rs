//! A box's config bundle, exported and imported: what `offsite export-bundle`, `offsite import-bundle`
//! and the admin page's USB-key import share (`docs/CONFIG.md`, "Config bundle (USB key)"). The format
//! itself is the `bundle` crate's; this module decides what goes in and how it is applied.
//!
//! An export writes the config as if it lived in a folder of its own: the state folder, the master key,
//! the SSH key and `known_hosts` beside the config (`state`, `master.key`, `ssh/…`), shares and data
//! volumes as absolute paths. An import checks everything before it writes anything, writes the key files
//! first (never replacing a different one) and the config last, each atomically; a failure leaves the old
//! config in force. A box that has a config keeps its own state folder and key file locations. Every
//! attempt can be logged with [`log_attempt`] (never a secret).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::Config;

/// Names inside the bundle's config, relative to the config's folder.
const STATE_DIR: &str = "state";
const KEY_FILE: &str = "master.key";
const SSH_DIR: &str = "ssh";
const KNOWN_HOSTS: &str = "ssh/known_hosts";

/// The most a bundle file is read: one byte past the format's limit, so an oversized file is refused with
/// the format's own message without being read whole.
pub const MAX_BUNDLE_FILE: u64 = bundle::MAX_BUNDLE_LEN as u64 + 1;

/// The log of import attempts, beside the config.
pub const IMPORT_LOG: &str = "offsite-import.log";

/// A sealed bundle and what it carries (for the caller's message).
pub struct Exported {
    pub bytes: Vec<u8>,
    pub box_name: String,
    pub with_key: bool,
    pub with_ssh_key: bool,
}

/// What an import changed, one line each (never a secret), and the config now in force.
pub struct Imported {
    pub config: Config,
    pub changes: Vec<String>,
}

/// This box's host name, as a bundle records it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .unwrap_or_else(|| "offsite".into())
}

fn read_text(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {what} {}: {e}", path.display()))
}

/// Checks a passphrase a bundle is sealed with.
pub fn check_passphrase(passphrase: &[u8]) -> Result<(), String> {
    if String::from_utf8_lossy(passphrase).trim().chars().count() < bundle::MIN_PASSPHRASE_CHARS {
        return Err(format!(
            "the passphrase is empty or shorter than {} characters",
            bundle::MIN_PASSPHRASE_CHARS
        ));
    }
    Ok(())
}

/// Seals `config` (and with `with_keys` the master key and the SSH key it names) with `passphrase`.
pub fn export(config: &Config, with_keys: bool, passphrase: &[u8]) -> Result<Exported, String> {
    check_passphrase(passphrase)?;
    // The config as it will read on the new box: key and SSH files beside it.
    let base = Path::new("/.offsite-bundle");
    let mut c = config.clone();
    c.file = base.join("offsite.toml");
    c.state_dir = base.join(STATE_DIR);
    c.key_file = base.join(KEY_FILE);
    let identity_name = config.target.identity_file.as_ref().map(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .filter(|n| *n != "known_hosts")
            .unwrap_or("id_ed25519")
            .to_owned()
    });
    c.target.identity_file = identity_name.as_ref().map(|n| base.join(SSH_DIR).join(n));
    c.target.known_hosts = config
        .target
        .known_hosts
        .as_ref()
        .map(|_| base.join(KNOWN_HOSTS));
    let config_text = c
        .to_toml()
        .map_err(|e| format!("{}: {e}", config.file.display()))?
        .replacen(
            "written by the admin page of `offsite serve`",
            "exported into a config bundle",
            1,
        );

    let known_hosts = match &config.target.known_hosts {
        Some(p) if p.exists() => Some(read_text(p, "target.known_hosts")?),
        _ => None,
    };
    let (key_text, ssh_key) = if with_keys {
        let key = read_text(&config.key_file, "the key file (key_file)")?;
        let ssh = match &config.target.identity_file {
            Some(p) => {
                let private_key = read_text(p, "the SSH key (target.identity_file)")?;
                let mut pub_path = p.as_os_str().to_owned();
                pub_path.push(".pub");
                let public_key = std::fs::read_to_string(PathBuf::from(pub_path)).ok();
                Some(bundle::SshKey {
                    private_key,
                    public_key,
                })
            }
            None => None,
        };
        (Some(key), ssh)
    } else {
        (None, None)
    };
    let b = bundle::Bundle {
        created: jiff::Timestamp::now().as_second(),
        box_name: host_name(),
        config_text,
        key_text,
        ssh_key,
        known_hosts,
    };
    let bytes = bundle::seal(&b, passphrase).map_err(|e| format!("sealing the bundle: {e}"))?;
    Ok(Exported {
        bytes,
        box_name: b.box_name.clone(),
        with_key: b.key_text.is_some(),
        with_ssh_key: b.ssh_key.is_some(),
    })
}

/// Writes a bundle to `out` with mode 0600; never over an existing file.
pub fn write_bundle(out: &Path, bytes: &[u8]) -> Result<(), String> {
    if out.symlink_metadata().is_ok() {
        return Err(format!(
            "{}: already exists (a bundle is never overwritten)",
            out.display()
        ));
    }
    write_new(out, bytes, false).map_err(|e| {
        format!(
            "writing {}: {e} (a bundle is never overwritten)",
            out.display()
        )
    })
}

/// Reads a bundle file, at most one byte past the size limit (an oversized file is refused by
/// [`bundle::open`] without being read whole).
pub fn read_bundle(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BUNDLE_FILE).read_to_end(&mut bytes))
        .map_err(|e| format!("reading bundle {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The folder a path's file lies in (`.` for a bare name).
pub fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The target in one line (no secret).
pub fn describe_target(c: &Config) -> String {
    match &c.target.host {
        Some(h) => format!(
            "target {}@{}:{} port {}",
            c.target.user, h, c.target.path, c.target.port
        ),
        None => format!("target folder {}", c.target.path),
    }
}

/// `p` lies in one of `volumes`: lexically (absolute, no `..`), and once symlinks are resolved for the part
/// that exists already.
fn inside(p: &Path, volumes: &[PathBuf]) -> bool {
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return false;
    }
    if !volumes.iter().any(|v| p.starts_with(v)) {
        return false;
    }
    // The longest existing ancestor, with symlinks resolved, must still lie in a volume.
    let mut existing = p;
    loop {
        if existing.symlink_metadata().is_ok() {
            break;
        }
        match existing.parent() {
            Some(up) => existing = up,
            None => return true,
        }
    }
    let Ok(real) = std::fs::canonicalize(existing) else {
        return false;
    };
    volumes.iter().any(|v| {
        let v = std::fs::canonicalize(v).unwrap_or_else(|_| v.clone());
        real.starts_with(v)
    })
}

fn show(v: &[PathBuf]) -> String {
    if v.is_empty() {
        return "none configured: [web] data_volumes".into();
    }
    v.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One file the import writes.
struct Planned {
    path: PathBuf,
    text: Zeroizing<String>,
    what: &'static str,
    /// The same content is there already: nothing to write.
    present: bool,
}

/// Opens `bytes` with `passphrase` and applies the bundle to the config file `dest` (created on a fresh
/// box). `source` names the bundle in messages. Nothing is written unless every check passes: the
/// config loads, its shares and data volumes lie in this box's data volumes (the bundle's own on a fresh
/// box), and no key file it carries would replace a different one.
pub fn import(
    dest: &Path,
    bytes: &[u8],
    passphrase: &[u8],
    source: &str,
) -> Result<Imported, String> {
    let b = bundle::open(bytes, passphrase).map_err(|e| format!("{source}: {e}"))?;

    let mut new = Config::parse(dest, &b.config_text)
        .map_err(|e| format!("{source}: the bundle's config does not load: {e}"))?;
    let old = if dest.exists() {
        Some(Config::load(dest).map_err(|e| {
            format!("the box's current config does not load ({e}); fix or move it before importing")
        })?)
    } else {
        None
    };
    // A box that has a config keeps what belongs to its hardware and layout: its state folder, its key,
    // SSH key and known_hosts files where they are (a carried key is written there, never over a
    // different one), its admin page's address and data volumes, and where it looks for USB keys.
    // A fresh box takes the bundle's: files beside the config.
    let mut kept_local = false;
    if let Some(o) = &old {
        kept_local = new.web != o.web || new.usb != o.usb;
        new.state_dir = o.state_dir.clone();
        new.key_file = o.key_file.clone();
        new.web = o.web.clone();
        new.usb = o.usb.clone();
        if o.target.identity_file.is_some() && new.target.identity_file.is_some() {
            new.target.identity_file = o.target.identity_file.clone();
        }
        if o.target.known_hosts.is_some() && new.target.known_hosts.is_some() {
            new.target.known_hosts = o.target.known_hosts.clone();
        }
    }

    // Shares must lie in the data volumes: the box's own when it has a config (kept above: a USB key
    // must not widen them), the bundle's on a fresh box.
    let volumes = &new.web.data_volumes;
    for (i, s) in new.shares.iter().enumerate() {
        if !inside(&s.path, volumes) {
            return Err(format!(
                "{source}: share[{i}] {:?}: path {} is not inside a data volume ({}); rejected",
                s.name,
                s.path.display(),
                show(volumes)
            ));
        }
    }
    // The files the bundle carries, each checked against what is there.
    let mut plan: Vec<Planned> = Vec::new();
    if let Some(k) = &b.key_text {
        plan.push(Planned {
            path: new.key_file.clone(),
            text: Zeroizing::new(k.clone()),
            what: "master key (key_file)",
            present: false,
        });
    }
    if let Some(ssh) = &b.ssh_key {
        let Some(id) = &new.target.identity_file else {
            return Err(format!(
                "{source}: the bundle carries an SSH key but its config has no target.identity_file"
            ));
        };
        plan.push(Planned {
            path: id.clone(),
            text: Zeroizing::new(ssh.private_key.clone()),
            what: "SSH key (target.identity_file)",
            present: false,
        });
        if let Some(p) = &ssh.public_key {
            let mut pub_path = id.as_os_str().to_owned();
            pub_path.push(".pub");
            plan.push(Planned {
                path: PathBuf::from(pub_path),
                text: Zeroizing::new(p.clone()),
                what: "SSH public key",
                present: false,
            });
        }
    }
    let mut known_hosts_added = None;
    if let (Some(kh), Some(p)) = (&b.known_hosts, &new.target.known_hosts) {
        match std::fs::read_to_string(p) {
            // The box trusts some hosts already: the bundle's lines are added to them.
            Ok(have) => {
                let missing: Vec<&str> = kh
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !have.lines().any(|h| h == *l))
                    .collect();
                if !missing.is_empty() {
                    known_hosts_added = Some((p.clone(), have, missing.join("\n")));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => plan.push(Planned {
                path: p.clone(),
                text: Zeroizing::new(kh.clone()),
                what: "trusted host keys (target.known_hosts)",
                present: false,
            }),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    for f in &mut plan {
        match std::fs::read(&f.path) {
            Ok(have) if have == f.text.as_bytes() => f.present = true,
            Ok(_) => {
                return Err(format!(
                    "{source}: the {} {} already exists with different content; an import never \
                     replaces it (move it away first if the bundle's is the right one)",
                    f.what,
                    f.path.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", f.path.display())),
        }
    }

    // Apply: the carried files first (new files only, each atomically), the config last.
    let mut wrote = Vec::new();
    for f in plan.iter().filter(|f| !f.present) {
        write_new(&f.path, f.text.as_bytes(), true)
            .map_err(|e| format!("writing the {} {}: {e}", f.what, f.path.display()))?;
        wrote.push(format!("{} {}", f.what, f.path.display()));
    }
    if let Some((p, have, lines)) = &known_hosts_added {
        let sep = if have.is_empty() || have.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        crate::replace_durably(p, format!("{have}{sep}{lines}\n").as_bytes())
            .map_err(|e| format!("writing the trusted host keys {}: {e}", p.display()))?;
        wrote.push(format!(
            "trusted host keys (target.known_hosts) {}: {} line(s) added",
            p.display(),
            lines.lines().count()
        ));
    }
    std::fs::create_dir_all(parent_of(dest))
        .map_err(|e| format!("creating the folder of {}: {e}", dest.display()))?;
    let config = new
        .save()
        .map_err(|e| format!("writing the config {}: {e}", dest.display()))?;

    // What changed (never a secret).
    let mut out = Vec::new();
    out.push(format!(
        "config {} {} from bundle of box {:?} (exported {})",
        dest.display(),
        if old.is_some() { "replaced" } else { "created" },
        b.box_name,
        jiff::Timestamp::from_second(b.created)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| b.created.to_string())
    ));
    let old_target = old.as_ref().map(describe_target);
    let new_target = describe_target(&new);
    match old_target {
        Some(t) if t == new_target => out.push(format!("{new_target} (unchanged)")),
        Some(t) => out.push(format!("{new_target} (was: {t})")),
        None => out.push(new_target),
    }
    for s in &new.shares {
        let before = old
            .as_ref()
            .and_then(|o| o.shares.iter().find(|x| x.name == s.name));
        let how = match before {
            None => "added".to_owned(),
            Some(x) if x.path == s.path => "unchanged path".to_owned(),
            Some(x) => format!("was {}", x.path.display()),
        };
        out.push(format!("share {}: {} ({how})", s.name, s.path.display()));
    }
    if let Some(o) = &old {
        for s in o
            .shares
            .iter()
            .filter(|s| !new.shares.iter().any(|n| n.name == s.name))
        {
            out.push(format!("share {}: removed", s.name));
        }
    }
    if kept_local {
        out.push(
            "kept this box's [web] and [usb] settings (admin page address, data volumes, USB mount \
             points); the bundle's differ"
                .into(),
        );
    }
    for w in &wrote {
        out.push(format!("wrote {w}"));
    }
    for f in plan.iter().filter(|f| f.present) {
        out.push(format!(
            "{} {} already there (same content)",
            f.what,
            f.path.display()
        ));
    }
    if b.key_text.is_none() && !new.key_file.exists() {
        out.push(format!(
            "no key in the bundle: put the master key at {} before the next backup",
            new.key_file.display()
        ));
    }
    Ok(Imported {
        config,
        changes: out,
    })
}

/// Appends one line to [`IMPORT_LOG`] beside the config `dest`: when, who, which bundle, and what
/// changed or why not (the caller passes no secret).
pub fn log_attempt(dest: &Path, who: &str, source: &str, line: &str) -> Result<(), String> {
    let log = parent_of(dest).join(IMPORT_LOG);
    let entry = format!(
        "{} user={who} bundle={source} {}\n",
        jiff::Timestamp::now(),
        line.replace('\n', "; ")
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(entry.as_bytes()))
        .map_err(|e| format!("logging the import attempt in {}: {e}", log.display()))
}

/// Writes a new file atomically with mode 0600: temporary file, fsync, rename (never over an existing
/// file), fsync of the folder. With `make_dirs`, missing folders are created with mode 0700.
fn write_new(path: &Path, data: &[u8], make_dirs: bool) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = parent_of(path);
    if make_dirs {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // tempfile creates it with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".offsite-bundle.")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    crate::sync_dir(path)
}
