//! Writing a config back: the admin page's settings change the config file, so a [`Config`] is turned
//! into TOML again ([`Config::to_toml`]) and saved atomically ([`Config::save`]).
//!
//! The written file is canonical: every key the config has, paths relative to the config's folder where
//! they lie below it, and a header saying that the page wrote it. Comments of a hand-written file are not
//! kept (the previous file stays beside it as `<name>.bak`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, NotifyConfig, Retention, SmtpTls};

#[derive(Serialize)]
struct OutConfig {
    state_dir: String,
    key_file: String,
    target: OutTarget,
    schedule: OutSchedule,
    web: OutWeb,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<OutNotify>,
    usb: OutUsb,
    share: Vec<OutShare>,
}

#[derive(Serialize)]
struct OutUsb {
    enabled: bool,
    watch: Vec<String>,
}

#[derive(Serialize)]
struct OutTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    known_hosts: Option<String>,
    rsync_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bwlimit_kbps: Option<u64>,
    timeout_secs: u64,
}

#[derive(Serialize)]
struct OutSchedule {
    enabled: bool,
    at: String,
    jitter_minutes: u32,
    retry_minutes: u64,
    max_attempts: u32,
}

#[derive(Serialize)]
struct OutWeb {
    enabled: bool,
    listen: String,
    data_volumes: Vec<String>,
}

#[derive(Serialize)]
struct OutNotify {
    on_success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    smtp: Option<OutSmtp>,
}

#[derive(Serialize)]
struct OutSmtp {
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    tls: SmtpTls,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<String>,
    from: String,
    to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
}

#[derive(Serialize)]
struct OutShare {
    name: String,
    path: String,
    encrypt: bool,
    encrypt_names: bool,
    compress: bool,
    exclude: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    retention: Retention,
}

fn hhmm(w: &scheduler::Window) -> String {
    format!("{:02}:{:02}", w.at.hour(), w.at.minute())
}

impl Config {
    /// A path as the file should say it: relative when it lies below the config's folder.
    fn written(&self, p: &Path) -> Result<String, String> {
        let base = self
            .file
            .parent()
            .filter(|b| !b.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let shown = p.strip_prefix(base).unwrap_or(p);
        let shown = if shown.as_os_str().is_empty() {
            Path::new(".")
        } else {
            shown
        };
        shown
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{}: paths in the config must be UTF-8", p.display()))
    }

    fn written_opt(&self, p: &Option<PathBuf>) -> Result<Option<String>, String> {
        p.as_deref().map(|p| self.written(p)).transpose()
    }

    /// The config as a TOML file that [`Config::parse`] reads back to an equal config.
    pub fn to_toml(&self) -> Result<String, String> {
        let t = &self.target;
        let remote = t.host.is_some();
        let n: &NotifyConfig = &self.notify;
        let notify = if n.webhook.is_none() && n.smtp.is_none() && !n.on_success {
            None
        } else {
            Some(OutNotify {
                on_success: n.on_success,
                webhook: n.webhook.clone(),
                smtp: match &n.smtp {
                    None => None,
                    Some(m) => Some(OutSmtp {
                        host: m.host.clone(),
                        port: m.port,
                        tls: m.tls,
                        user: m.user.clone(),
                        password_file: self.written_opt(&m.password_file)?,
                        from: m.from.clone(),
                        to: m.to.clone(),
                        ca_file: self.written_opt(&m.ca_file)?,
                    }),
                },
            })
        };
        let out = OutConfig {
            state_dir: self.written(&self.state_dir)?,
            key_file: self.written(&self.key_file)?,
            target: OutTarget {
                host: t.host.clone(),
                port: remote.then_some(t.port),
                user: remote.then(|| t.user.clone()),
                path: t.path.clone(),
                identity_file: self.written_opt(&t.identity_file)?,
                known_hosts: self.written_opt(&t.known_hosts)?,
                rsync_path: t.rsync_path.clone(),
                bwlimit_kbps: t.bwlimit_kbps,
                timeout_secs: t.timeout_secs,
            },
            schedule: OutSchedule {
                enabled: self.schedule.enabled,
                at: hhmm(&self.schedule.policy.window),
                jitter_minutes: self.schedule.policy.window.jitter_minutes,
                retry_minutes: self.schedule.policy.retry_first_secs / 60,
                max_attempts: self.schedule.policy.max_attempts,
            },
            web: OutWeb {
                enabled: self.web.enabled,
                listen: self.web.listen.clone(),
                data_volumes: self
                    .web
                    .data_volumes
                    .iter()
                    .map(|p| self.written(p))
                    .collect::<Result<_, _>>()?,
            },
            notify,
            usb: OutUsb {
                enabled: self.usb.enabled,
                watch: self.usb.watch.clone(),
            },
            share: self
                .shares
                .iter()
                .map(|s| {
                    Ok(OutShare {
                        name: s.name.clone(),
                        path: self.written(&s.path)?,
                        encrypt: s.encrypt,
                        encrypt_names: s.encrypt_names,
                        compress: s.compress,
                        exclude: s.exclude.clone(),
                        schedule: s.schedule.as_ref().map(hhmm),
                        retention: s.retention,
                    })
                })
                .collect::<Result<_, String>>()?,
        };
        let body = toml::to_string(&out).map_err(|e| format!("writing the config: {e}"))?;
        Ok(format!(
            "# offsite configuration, written by the admin page of `offsite serve` (see docs/CONFIG.md).\n\
             # Relative paths are relative to this file's folder. The previous version is in {}.bak.\n\n{body}",
            self.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "offsite.toml".into())
        ))
    }

    /// Checks the config by reading its TOML back, then replaces the file atomically (temporary file,
    /// fsync, rename, fsync of the folder), keeping the previous file as `<name>.bak`. Returns the config
    /// as read back.
    pub fn save(&self) -> Result<Config, String> {
        let text = self.to_toml()?;
        let back = Config::parse(&self.file, &text)
            .map_err(|e| format!("the new config would not load: {e}"))?;
        let dir = self
            .file
            .parent()
            .filter(|b| !b.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let ctx = |e: std::io::Error| format!("writing {}: {e}", self.file.display());
        let mut tmp = tempfile::Builder::new()
            .prefix(".offsite-config.")
            .tempfile_in(dir)
            .map_err(ctx)?;
        tmp.write_all(text.as_bytes()).map_err(ctx)?;
        tmp.as_file().sync_all().map_err(ctx)?;
        if self.file.exists() {
            let mut bak = self.file.as_os_str().to_owned();
            bak.push(".bak");
            std::fs::copy(&self.file, PathBuf::from(bak)).map_err(ctx)?;
        }
        tmp.persist(&self.file).map_err(|e| ctx(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(ctx)?;
        Ok(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offsite.toml");
        let text = r#"
state_dir = "state"
key_file = "/etc/offsite/master.key"
[target]
host = "backup.example.net"
port = 2222
user = "nas"
path = "backups/box"
identity_file = "ssh/id_ed25519"
known_hosts = "ssh/known_hosts"
rsync_path = "rrsync"
bwlimit_kbps = 500
timeout_secs = 60
[schedule]
at = "02:15"
jitter_minutes = 10
retry_minutes = 20
max_attempts = 3
enabled = false
[web]
listen = "127.0.0.1:9443"
data_volumes = ["/srv", "data"]
[notify]
on_success = true
webhook = "https://ntfy.example/offsite"
[notify.smtp]
host = "mail.example.net"
tls = "starttls"
user = "nas"
password_file = "smtp-password"
from = "nas@example.net"
to = ["me@example.net"]
[usb]
enabled = false
watch = ["/media/*", "/run/media/*/[Bb]ackup*"]
[[share]]
name = "photos"
path = "/srv/photos"
exclude = ["*.tmp", "[x] #y"]
schedule = "03:00"
retention = { daily = 3, weekly = 0, monthly = 0 }
[[share]]
name = "plain"
path = "plain"
encrypt = false
compress = false
"#;
        let a = Config::parse(&file, text).unwrap();
        let out = a.to_toml().unwrap();
        let b = Config::parse(&file, &out).unwrap();
        assert_eq!(a.state_dir, b.state_dir);
        assert_eq!(a.key_file, b.key_file);
        assert_eq!(a.target, b.target);
        assert_eq!(a.schedule, b.schedule);
        assert_eq!(a.web, b.web);
        assert_eq!(a.notify, b.notify);
        assert_eq!(a.usb, b.usb);
        assert!(!b.usb.enabled);
        assert_eq!(a.shares.len(), b.shares.len());
        for (x, y) in a.shares.iter().zip(&b.shares) {
            assert_eq!(
                (
                    &x.name,
                    &x.path,
                    x.encrypt,
                    x.encrypt_names,
                    x.compress,
                    &x.exclude,
                    x.retention,
                    x.schedule
                ),
                (
                    &y.name,
                    &y.path,
                    y.encrypt,
                    y.encrypt_names,
                    y.compress,
                    &y.exclude,
                    y.retention,
                    y.schedule
                )
            );
        }
        assert!(out.contains("state_dir = \"state\""), "{out}");
        // Saved atomically, the old file kept.
        std::fs::write(&file, text).unwrap();
        let saved = a.save().unwrap();
        assert_eq!(saved.target, a.target);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), out);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("offsite.toml.bak")).unwrap(),
            text
        );
    }
}
