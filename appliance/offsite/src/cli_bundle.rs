//! `offsite export-bundle` and `offsite import-bundle`: the config (and optionally the keys) sealed with a
//! passphrase for a USB key or a disaster-recovery copy (`docs/CONFIG.md`, "Config bundle (USB key)").
//!
//! An export writes the config as if it lived in a folder of its own: the state folder, the master key,
//! the SSH key and `known_hosts` beside the config (`state`, `master.key`, `ssh/…`), shares and data
//! volumes as absolute paths. An import checks everything before it writes anything, writes the key files
//! first (never replacing a different one) and the config last, each atomically.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use backup::config::Config;
use bundle::{Bundle, SshKey};
use clap::Args;
use zeroize::Zeroizing;

#[derive(Args)]
pub struct ExportArgs {
    /// The box's config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the bundle (never overwritten; mode 0600).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Also carry the master key and the SSH key: the bundle then opens the backups by itself.
    #[arg(long)]
    with_keys: bool,
    /// A file whose first line is the bundle's passphrase (at least 8 characters).
    #[arg(long, value_name = "FILE")]
    passphrase_file: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Where the imported config goes (the box's config; on a fresh box, where to create it). The key
    /// and SSH files are written beside it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A file whose first line is the bundle's passphrase.
    #[arg(long, value_name = "FILE")]
    passphrase_file: PathBuf,
    /// The bundle file.
    #[arg(value_name = "PATH")]
    bundle: PathBuf,
}

/// Names inside the bundle's config, relative to the config's folder.
const STATE_DIR: &str = "state";
const KEY_FILE: &str = "master.key";
const SSH_DIR: &str = "ssh";
const KNOWN_HOSTS: &str = "ssh/known_hosts";

/// The first line of `file`, without its line ending.
fn first_line_passphrase(file: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let all = Zeroizing::new(
        std::fs::read(file)
            .with_context(|| format!("reading passphrase file {}", file.display()))?,
    );
    let line = all.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .unwrap_or_else(|| "offsite".into())
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

pub fn export(a: ExportArgs) -> Result<()> {
    let passphrase = first_line_passphrase(&a.passphrase_file)?;
    if String::from_utf8_lossy(&passphrase).trim().chars().count() < bundle::MIN_PASSPHRASE_CHARS {
        bail!(
            "{}: the passphrase (its first line) is empty or shorter than {} characters",
            a.passphrase_file.display(),
            bundle::MIN_PASSPHRASE_CHARS
        );
    }
    if a.out.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists (a bundle is never overwritten)",
            a.out.display()
        );
    }
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;

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
        .map_err(|e| anyhow!("{}: {e}", a.config.display()))?
        .replacen(
            "written by the admin page of `offsite serve`",
            "exported into a config bundle by `offsite export-bundle`",
            1,
        );

    let known_hosts = match &config.target.known_hosts {
        Some(p) if p.exists() => Some(read_text(p, "target.known_hosts")?),
        _ => None,
    };
    let (key_text, ssh_key) = if a.with_keys {
        let key = read_text(&config.key_file, "the key file (key_file)")?;
        let ssh = match &config.target.identity_file {
            Some(p) => {
                let private_key = read_text(p, "the SSH key (target.identity_file)")?;
                let mut pub_path = p.as_os_str().to_owned();
                pub_path.push(".pub");
                let public_key = std::fs::read_to_string(PathBuf::from(pub_path)).ok();
                Some(SshKey {
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
    let created = jiff::Timestamp::now().as_second();
    let b = Bundle {
        created,
        box_name: host_name(),
        config_text,
        key_text,
        ssh_key,
        known_hosts,
    };
    let sealed = bundle::seal(&b, &passphrase).map_err(|e| anyhow!("sealing the bundle: {e}"))?;

    let dir = parent_of(&a.out);
    let ctx = || format!("writing {}", a.out.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".offsite-bundle.")
        .tempfile_in(dir)
        .with_context(ctx)?;
    // tempfile creates it with mode 0600.
    tmp.write_all(&sealed).with_context(ctx)?;
    tmp.as_file().sync_all().with_context(ctx)?;
    tmp.persist_noclobber(&a.out).map_err(|e| {
        anyhow!(
            "writing {}: {} (a bundle is never overwritten)",
            a.out.display(),
            e.error
        )
    })?;
    sync_dir(dir).with_context(ctx)?;

    println!(
        "wrote {} ({} bytes): the config of {} ({}), {}",
        a.out.display(),
        sealed.len(),
        b.box_name,
        describe_target(&config),
        if a.with_keys {
            match &b.ssh_key {
                Some(_) => "with the master key and the SSH key: keep it as safe as the key itself",
                None => "with the master key: keep it as safe as the key itself",
            }
        } else {
            "without keys"
        }
    );
    for s in &config.shares {
        println!("  share {}: {}", s.name, s.path.display());
    }
    Ok(())
}

fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

fn describe_target(c: &Config) -> String {
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

/// One file the import writes.
struct Planned {
    path: PathBuf,
    text: Zeroizing<String>,
    what: &'static str,
    /// The same content is there already: nothing to write.
    present: bool,
}

pub fn import(a: ImportArgs) -> Result<()> {
    let dest = std::path::absolute(&a.config)
        .with_context(|| format!("{}: cannot make the path absolute", a.config.display()))?;
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| format!("uid {}", m.uid()))
                .unwrap_or_else(|_| "?".into())
        });
    let result = import_inner(&a, &dest);
    let line = match &result {
        Ok(changes) => format!("imported: {changes}"),
        Err(e) => format!("rejected: {e:#}"),
    };
    log_attempt(&dest, &who, &a.bundle, &line);
    result.map(|_| ())
}

/// Appends one line per attempt to `import.log` beside the config (who, when, which bundle, what changed
/// or why not; never a secret). A log that cannot be written is reported but does not fail the import.
fn log_attempt(dest: &Path, who: &str, bundle: &Path, line: &str) {
    let log = parent_of(dest).join("offsite-import.log");
    let entry = format!(
        "{} user={who} bundle={} {}\n",
        jiff::Timestamp::now(),
        bundle.display(),
        line.replace('\n', "; ")
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(entry.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "offsite: could not log the import attempt in {}: {e}",
            log.display()
        );
    }
}

fn import_inner(a: &ImportArgs, dest: &Path) -> Result<String> {
    let passphrase = first_line_passphrase(&a.passphrase_file)?;
    // Read at most one byte more than the limit: an oversized file is refused without reading it all.
    let mut bytes = Vec::new();
    std::fs::File::open(&a.bundle)
        .and_then(|f| {
            f.take(bundle::MAX_BUNDLE_LEN as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("reading bundle {}", a.bundle.display()))?;
    let b =
        bundle::open(&bytes, &passphrase).map_err(|e| anyhow!("{}: {e}", a.bundle.display()))?;

    let new = Config::parse(dest, &b.config_text).map_err(|e| {
        anyhow!(
            "{}: the bundle's config does not load: {e}",
            a.bundle.display()
        )
    })?;
    let old = if dest.exists() {
        Some(Config::load(dest).map_err(|e| {
            anyhow!("the box's current config does not load ({e}); fix or move it before importing")
        })?)
    } else {
        None
    };

    // Shares must lie in the data volumes: the box's own when it has a config (a USB key must not widen
    // them), the bundle's on a fresh box.
    let volumes = match &old {
        Some(o) => &o.web.data_volumes,
        None => &new.web.data_volumes,
    };
    for (i, s) in new.shares.iter().enumerate() {
        if !inside(&s.path, volumes) {
            bail!(
                "{}: share[{i}] {:?}: path {} is not inside a data volume ({}); rejected",
                a.bundle.display(),
                s.name,
                s.path.display(),
                show(volumes)
            );
        }
    }
    if let Some(o) = &old {
        for (i, v) in new.web.data_volumes.iter().enumerate() {
            if !inside(v, &o.web.data_volumes) {
                bail!(
                    "{}: web.data_volumes[{i}] = {} is not inside this box's data volumes ({}); rejected",
                    a.bundle.display(),
                    v.display(),
                    show(&o.web.data_volumes)
                );
            }
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
            bail!(
                "{}: the bundle carries an SSH key but its config has no target.identity_file",
                a.bundle.display()
            );
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
    if let (Some(kh), Some(p)) = (&b.known_hosts, &new.target.known_hosts) {
        plan.push(Planned {
            path: p.clone(),
            text: Zeroizing::new(kh.clone()),
            what: "trusted host keys (target.known_hosts)",
            present: false,
        });
    }
    for f in &mut plan {
        match std::fs::read(&f.path) {
            Ok(have) if have == f.text.as_bytes() => f.present = true,
            Ok(_) => bail!(
                "{}: the {} {} already exists with different content; an import never replaces it \
                 (move it away first if the bundle's is the right one)",
                a.bundle.display(),
                f.what,
                f.path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("{}: {e}", f.path.display()),
        }
    }

    // Apply: the carried files first (new files only, each atomically), the config last.
    let mut wrote = Vec::new();
    for f in plan.iter().filter(|f| !f.present) {
        write_new(&f.path, f.text.as_bytes())
            .with_context(|| format!("writing the {} {}", f.what, f.path.display()))?;
        wrote.push(format!("{} {}", f.what, f.path.display()));
    }
    std::fs::create_dir_all(parent_of(dest))
        .with_context(|| format!("creating the folder of {}", dest.display()))?;
    new.save()
        .map_err(|e| anyhow!("writing the config {}: {e}", dest.display()))?;

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
    for l in &out {
        println!("{l}");
    }
    Ok(out.join("; "))
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

/// Writes a new file atomically with mode 0600: temporary file, fsync, rename (never over an existing
/// file), fsync of the folder. Missing folders are created with mode 0700.
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = parent_of(path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".offsite-import.")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(())
}
