//! The settings routes: what the first-run setup and the Settings screen change. Every change is
//! checked by loading the new config back, saved atomically ([`backup::Config::save`]) and handed to the
//! service ([`service::Handle::set_config`]), which reschedules with it.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/config` | the settings (no secret: no key, no password, no private key) |
//! | `POST /api/key` | create (`{action:"create"}`) or import (`{action:"import", text}`) the master key, only while there is none; a created key's recovery text is in this one answer and nowhere else |
//! | `PUT /api/target` | host, port, user, remote path, rsync command, bandwidth limit |
//! | `GET`/`POST /api/ssh-key` | the box's SSH public key with ready-to-paste `authorized_keys` lines; `POST` makes it (`{replace:true}` makes a new one) |
//! | `POST /api/host-key/test` | connects: the host key's fingerprint and whether it is trusted, changed or unknown; with a trusted key also logs in and lists the remote folder |
//! | `POST /api/host-key/trust` | trusts the key with the fingerprint the user saw (`{fingerprint, replace}`) |
//! | `PUT /api/shares` | the list of shares |
//! | `GET /api/browse?path=` | folders below the data volumes, for the path picker |
//! | `PUT /api/schedule` | the nightly window |
//! | `PUT /api/notify` | webhook and mail settings (the SMTP password goes to a file of its own) |
//!
//! All but `GET` need the session's CSRF token.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use backup::Config;
use backup::config::{NotifyConfig, Retention, ShareConfig, SmtpConfig, SmtpTls};
use serde::{Deserialize, Serialize};

use crate::api::{App, error, session, session_and_csrf};

type Shared = Arc<App>;

/// One change to the config at a time (two tabs saving at once must not lose one of the changes).
pub(crate) static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies `change` to the config in force, saves it and hands it to the service.
async fn change_config(
    app: &App,
    change: impl FnOnce(&mut Config) -> Result<(), String>,
) -> Result<Arc<Config>, Response> {
    let _guard = WRITING.lock().await;
    let mut config = (*app.config()).clone();
    change(&mut config).map_err(|e| error(StatusCode::BAD_REQUEST, &e))?;
    let saved = config
        .save()
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e))?;
    app.service
        .set_config(saved)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e))?;
    tracing::info!("web: settings saved to {}", config.file.display());
    Ok(app.config())
}

/// The answer to a change: the saved settings, or why not.
fn saved(app: &App, result: Result<Arc<Config>, Response>) -> Response {
    match result {
        Ok(c) => Json(view(app, &c)).into_response(),
        Err(r) => r,
    }
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---- GET /api/config ----------------------------------------------------------------------------

#[derive(Serialize)]
struct ConfigView {
    file: String,
    key: KeyView,
    target: TargetView,
    shares: Vec<ShareView>,
    schedule: ScheduleView,
    notify: NotifyView,
    data_volumes: Vec<String>,
}

#[derive(Serialize)]
struct KeyView {
    exists: bool,
    key_id: Option<String>,
    suite: Option<String>,
    /// The key file exists but could not be read (wrong passphrase, damaged).
    error: Option<String>,
}

#[derive(Serialize)]
struct TargetView {
    host: Option<String>,
    port: u16,
    user: String,
    path: String,
    rsync_path: String,
    bwlimit_kbps: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct ShareView {
    name: String,
    path: String,
    #[serde(default = "yes")]
    encrypt: bool,
    #[serde(default)]
    encrypt_names: Option<bool>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    retention: Option<Retention>,
    /// This share's own window (`HH:MM`), or none for the common one.
    #[serde(default)]
    schedule: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct ScheduleView {
    enabled: bool,
    at: String,
    jitter_minutes: u32,
}

#[derive(Serialize)]
struct NotifyView {
    on_success: bool,
    webhook: Option<String>,
    smtp: Option<SmtpView>,
}

#[derive(Serialize, Deserialize)]
struct SmtpView {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    user: Option<String>,
    from: String,
    to: Vec<String>,
    /// Whether a password is stored (never the password).
    #[serde(default)]
    has_password: bool,
}

fn hhmm(w: &scheduler::Window) -> String {
    format!("{:02}:{:02}", w.at.hour(), w.at.minute())
}

fn view(app: &App, c: &Config) -> ConfigView {
    let key = if c.key_file.exists() {
        match app.master_key() {
            Ok(k) => KeyView {
                exists: true,
                key_id: Some(k.key_id_hex()),
                suite: Some(k.suite().to_string()),
                error: None,
            },
            Err(e) => KeyView {
                exists: true,
                key_id: None,
                suite: None,
                error: Some(e),
            },
        }
    } else {
        KeyView {
            exists: false,
            key_id: None,
            suite: None,
            error: None,
        }
    };
    let t = &c.target;
    ConfigView {
        file: lossy(&c.file),
        key,
        target: TargetView {
            host: t.host.clone(),
            port: t.port,
            user: t.user.clone(),
            path: t.path.clone(),
            rsync_path: t.rsync_path.clone(),
            bwlimit_kbps: t.bwlimit_kbps,
        },
        shares: c
            .shares
            .iter()
            .map(|s| ShareView {
                name: s.name.clone(),
                path: lossy(&s.path),
                encrypt: s.encrypt,
                encrypt_names: Some(s.encrypt_names),
                exclude: s.exclude.clone(),
                retention: Some(s.retention),
                schedule: s.schedule.as_ref().map(hhmm),
            })
            .collect(),
        schedule: ScheduleView {
            enabled: c.schedule.enabled,
            at: hhmm(&c.schedule.policy.window),
            jitter_minutes: c.schedule.policy.window.jitter_minutes,
        },
        notify: NotifyView {
            on_success: c.notify.on_success,
            webhook: c.notify.webhook.clone(),
            smtp: c.notify.smtp.as_ref().map(|m| SmtpView {
                host: m.host.clone(),
                port: m.port,
                starttls: m.tls == SmtpTls::Starttls,
                user: m.user.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                has_password: m.password_file.as_deref().is_some_and(Path::exists),
            }),
        },
        data_volumes: c.web.data_volumes.iter().map(|p| lossy(p)).collect(),
    }
}

async fn get_config(State(app): State<Shared>) -> Response {
    let c = app.config();
    Json(view(&app, &c)).into_response()
}

// ---- POST /api/key ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct KeyBody {
    action: String,
    #[serde(default)]
    text: Option<String>,
}

async fn post_key(State(app): State<Shared>, Json(b): Json<KeyBody>) -> Response {
    let _guard = WRITING.lock().await;
    let config = app.config();
    if config.key_file.exists() {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "the key file {} exists already: offsite never replaces a key (snapshots sealed with it \
                 would become unreadable)",
                config.key_file.display()
            ),
        );
    }
    let key = match b.action.as_str() {
        "create" => seal::MasterKey::generate(seal::Suite::for_this_cpu()),
        "import" => seal::MasterKey::from_key_text(b.text.as_deref().unwrap_or(""), None),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("action {other:?}: expected create or import"),
            );
        }
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Some(dir) = config.key_file.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("creating {}: {e}", dir.display()),
        );
    }
    // With `serve --passphrase-file`, the new key is wrapped with that passphrase like the CLI's keys.
    let wrap = app
        .passphrase
        .as_deref()
        .map(|p| (p, seal::KdfParams::default()));
    if let Err(e) = key.save_new(&config.key_file, wrap) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    tracing::info!(
        "web: the master key {} was {} ({})",
        key.key_id_hex(),
        if b.action == "create" {
            "created"
        } else {
            "imported"
        },
        config.key_file.display()
    );
    // Shown once: the created key's text is the recovery text. An imported one is not echoed.
    let recovery = (b.action == "create").then(|| key.key_file_plain().to_string());
    Json(serde_json::json!({
        "key_id": key.key_id_hex(),
        "suite": key.suite().to_string(),
        "recovery_text": recovery,
    }))
    .into_response()
}

// ---- PUT /api/target ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct TargetBody {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    user: Option<String>,
    path: String,
    #[serde(default)]
    rsync_path: Option<String>,
    #[serde(default)]
    bwlimit_kbps: Option<u64>,
}

/// Where the box's own SSH files live when the config does not say.
fn ssh_dir(c: &Config) -> PathBuf {
    c.state_dir.join("ssh")
}

async fn put_target(State(app): State<Shared>, Json(b): Json<TargetBody>) -> Response {
    let result = change_config(&app, |c| {
        let host = b
            .host
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        let t = &mut c.target;
        if let Some(h) = &host
            && (h.contains(char::is_whitespace) || h.starts_with('-'))
        {
            return Err(format!("target.host {h:?}: not a host name or address"));
        }
        let path = b.path.trim().to_owned();
        if path.is_empty() {
            return Err("target.path: the remote folder is required".into());
        }
        t.path = path;
        t.port = b.port.unwrap_or(22);
        t.bwlimit_kbps = b.bwlimit_kbps.filter(|&k| k > 0);
        if let Some(r) = b
            .rsync_path
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
        {
            t.rsync_path = r;
        }
        match host {
            None => {
                t.host = None;
                t.user = String::new();
            }
            Some(h) => {
                let user = b.user.map(|u| u.trim().to_owned()).unwrap_or_default();
                if user.is_empty() {
                    return Err("target.user: the remote user is required with a host".into());
                }
                t.host = Some(h);
                t.user = user;
                let dir = c.state_dir.join("ssh");
                let t = &mut c.target;
                t.identity_file
                    .get_or_insert_with(|| dir.join("id_ed25519"));
                t.known_hosts.get_or_insert_with(|| dir.join("known_hosts"));
            }
        }
        Ok(())
    })
    .await;
    saved(&app, result)
}

// ---- /api/ssh-key -------------------------------------------------------------------------------

fn identity_path(c: &Config) -> PathBuf {
    c.target
        .identity_file
        .clone()
        .unwrap_or_else(|| ssh_dir(c).join("id_ed25519"))
}

fn box_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "nas".into())
}

/// The public key and the lines to paste into the server's `authorized_keys`.
fn ssh_key_view(c: &Config) -> serde_json::Value {
    let path = identity_path(c);
    let mut pub_path = path.clone().into_os_string();
    pub_path.push(".pub");
    let Ok(line) = std::fs::read_to_string(PathBuf::from(pub_path)) else {
        return serde_json::json!({ "exists": path.exists(), "public_key": null });
    };
    let line = line.trim().to_owned();
    // rrsync confines the key to one folder; the client then names that folder `/`.
    let dir = if c.target.path.starts_with('/') && c.target.path != "/" {
        c.target.path.clone()
    } else {
        "offsite".to_owned()
    };
    serde_json::json!({
        "exists": true,
        "public_key": line,
        "authorized_keys_line": line,
        "rrsync_line": format!(
            "command=\"rrsync {}\",no-pty,no-agent-forwarding,no-port-forwarding,no-X11-forwarding {line}",
            offsite_ssh::shell_quote(&dir)
        ),
        "rrsync_dir": dir,
    })
}

async fn get_ssh_key(State(app): State<Shared>) -> Response {
    Json(ssh_key_view(&app.config())).into_response()
}

#[derive(Deserialize, Default)]
struct SshKeyBody {
    #[serde(default)]
    replace: bool,
}

async fn post_ssh_key(State(app): State<Shared>, body: Option<Json<SshKeyBody>>) -> Response {
    let replace = body.map(|b| b.0.replace).unwrap_or(false);
    let _guard = WRITING.lock().await;
    let c = app.config();
    let path = identity_path(&c);
    let mut pub_path = path.clone().into_os_string();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if path.exists() || pub_path.exists() {
        if !replace {
            return error(
                StatusCode::CONFLICT,
                "the box has an SSH key already (replace it explicitly to make a new one)",
            );
        }
        for p in [&path, &pub_path] {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("removing {}: {e}", p.display()),
                );
            }
        }
    }
    if let Some(dir) = path.parent()
        && let Err(e) = create_private_dir(dir)
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("creating {}: {e}", dir.display()),
        );
    }
    match offsite_ssh::generate_ed25519_keypair(&path, &format!("offsite@{}", box_name())) {
        Ok(k) => {
            tracing::info!("web: made the box's SSH key {}", k.fingerprint);
            Json(ssh_key_view(&c)).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

// ---- /api/host-key ------------------------------------------------------------------------------

fn ssh_target(c: &Config) -> Result<offsite_ssh::SshTarget, &'static str> {
    let t = &c.target;
    let Some(host) = &t.host else {
        return Err("the target is a folder on this box: there is no host key");
    };
    let mut s = offsite_ssh::SshTarget::new(
        host,
        t.user.clone(),
        identity_path(c),
        t.known_hosts
            .clone()
            .unwrap_or_else(|| ssh_dir(c).join("known_hosts")),
    )
    .with_port(t.port);
    s.connect_timeout = std::time::Duration::from_secs(15);
    Ok(s)
}

fn status_name(s: &offsite_ssh::HostKeyStatus) -> (&'static str, Option<String>) {
    match s {
        offsite_ssh::HostKeyStatus::Trusted { .. } => ("trusted", None),
        offsite_ssh::HostKeyStatus::Unknown { .. } => ("unknown", None),
        offsite_ssh::HostKeyStatus::Changed {
            expected_fingerprint,
            ..
        } => ("changed", Some(expected_fingerprint.clone())),
        offsite_ssh::HostKeyStatus::Revoked { .. } => ("revoked", None),
    }
}

/// The target's SSH settings and the host key it presents now, with where that key stands.
async fn probe(
    c: &Config,
) -> Result<
    (
        offsite_ssh::SshTarget,
        offsite_ssh::HostKeyInfo,
        offsite_ssh::HostKeyStatus,
    ),
    Box<Response>,
> {
    let target = ssh_target(c).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))?;
    let (info, status) = offsite_ssh::fetch_host_key(&target)
        .await
        .map_err(|e| Box::new(error(StatusCode::BAD_GATEWAY, &e.to_string())))?;
    Ok((target, info, status))
}

async fn post_host_key_test(State(app): State<Shared>) -> Response {
    let c = app.config();
    let (_, info, status) = match probe(&c).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (name, expected) = status_name(&status);
    // With a trusted key, log in and list the remote folder: the whole path a backup takes.
    let connection = if name == "trusted" {
        Some(check_connection(&c).await)
    } else {
        None
    };
    Json(serde_json::json!({
        "host": info.host,
        "port": info.port,
        "key_type": info.key_type,
        "fingerprint": info.fingerprint,
        "status": name,
        "expected_fingerprint": expected,
        "connection": connection,
    }))
    .into_response()
}

/// Logs in and lists the target folder.
async fn check_connection(c: &Config) -> serde_json::Value {
    let result = async {
        let remote = remote::Remote::connect(&backup::remote_ops::remote_target(&c.target))
            .await
            .map_err(|e| e.to_string())?;
        let name = c.shares.first().map(|s| s.name.as_str()).unwrap_or("-");
        let listed = backup::remote_ops::list_share(&remote, &c.target, name)
            .await
            .map_err(|e| e.to_string());
        let _ = remote.close().await;
        listed.map(|_| ())
    }
    .await;
    match result {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    }
}

#[derive(Deserialize)]
struct TrustBody {
    fingerprint: String,
    #[serde(default)]
    replace: bool,
}

async fn post_host_key_trust(State(app): State<Shared>, Json(b): Json<TrustBody>) -> Response {
    let _guard = WRITING.lock().await;
    let c = app.config();
    // Fetched again: what is trusted is what the host presents now, and only if it is what the user saw.
    let (target, info, status) = match probe(&c).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !constant_time_eq::constant_time_eq(info.fingerprint.as_bytes(), b.fingerprint.as_bytes()) {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "the host now presents {} instead of the key you were shown: not trusted",
                info.fingerprint
            ),
        );
    }
    let file = &target.known_hosts_file;
    match status {
        offsite_ssh::HostKeyStatus::Trusted { .. } => {
            return Json(serde_json::json!({ "trusted": info.fingerprint })).into_response();
        }
        offsite_ssh::HostKeyStatus::Revoked { .. } => {
            return error(
                StatusCode::CONFLICT,
                "this host key is marked @revoked in the known_hosts file",
            );
        }
        offsite_ssh::HostKeyStatus::Changed { .. } if !b.replace => {
            return error(
                StatusCode::CONFLICT,
                "the host key changed: confirm that you replace the old key",
            );
        }
        offsite_ssh::HostKeyStatus::Changed { .. } => {
            // Only the box's own file is rewritten; a known_hosts shared with other programs is not ours to edit.
            if !file.starts_with(&c.state_dir) {
                return error(
                    StatusCode::CONFLICT,
                    &format!(
                        "{} is not offsite's own file: remove the old key there by hand",
                        file.display()
                    ),
                );
            }
            if let Err(e) = std::fs::remove_file(file) {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("removing {}: {e}", file.display()),
                );
            }
            tracing::warn!(
                "web: the admin replaced the host key of {}:{} with {}",
                info.host,
                info.port,
                info.fingerprint
            );
        }
        offsite_ssh::HostKeyStatus::Unknown { .. } => {}
    }
    if let Some(dir) = file.parent()
        && let Err(e) = create_private_dir(dir)
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("creating {}: {e}", dir.display()),
        );
    }
    match offsite_ssh::append_known_host(file, &info.host, info.port, &info.key, false) {
        Ok(_) => {
            tracing::info!(
                "web: trusted the host key {} of {}:{}",
                info.fingerprint,
                info.host,
                info.port
            );
            Json(serde_json::json!({ "trusted": info.fingerprint })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

// ---- PUT /api/shares, GET /api/browse -----------------------------------------------------------

/// `p` made absolute and free of `.`/`..` without following symlinks, then checked to lie in a data
/// volume once symlinks are resolved (a link inside a volume must not lead out of it).
fn inside_volumes(c: &Config, p: &str) -> Result<PathBuf, String> {
    let p = Path::new(p);
    if !p.is_absolute() {
        return Err(format!("{}: give an absolute path", p.display()));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{}: `..` is not allowed", p.display()));
    }
    let real = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let ok = c.web.data_volumes.iter().any(|v| {
        std::fs::canonicalize(v)
            .map(|v| real.starts_with(v))
            .unwrap_or(false)
    });
    if !ok {
        return Err(format!(
            "{} is not inside a data volume ({})",
            p.display(),
            c.web
                .data_volumes
                .iter()
                .map(|v| v.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(real)
}

#[derive(Deserialize)]
struct SharesBody {
    shares: Vec<ShareView>,
}

async fn put_shares(State(app): State<Shared>, Json(b): Json<SharesBody>) -> Response {
    let result = change_config(&app, |c| {
        let jitter = c.schedule.policy.window.jitter_minutes;
        let mut shares = Vec::with_capacity(b.shares.len());
        for (i, s) in b.shares.into_iter().enumerate() {
            let name = s.name.trim().to_owned();
            backup::config::check_share_name(&name).map_err(|e| format!("share {}: {e}", i + 1))?;
            let path =
                inside_volumes(c, s.path.trim()).map_err(|e| format!("share {name}: {e}"))?;
            if !path.is_dir() {
                return Err(format!("share {name}: {} is not a folder", path.display()));
            }
            let exclude: Vec<String> = s
                .exclude
                .into_iter()
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect();
            let excludes = backup::exclude::Excludes::new(&exclude)
                .map_err(|(j, m)| format!("share {name}: exclude {:?}: {m}", exclude[j]))?;
            let encrypt_names = s.encrypt_names.unwrap_or(s.encrypt) && s.encrypt;
            let schedule = match s
                .schedule
                .as_deref()
                .map(str::trim)
                .filter(|x| !x.is_empty())
            {
                Some(at) => Some(
                    scheduler::Window::parse(at, jitter)
                        .map_err(|e| format!("share {name}: schedule: {e}"))?,
                ),
                None => None,
            };
            // A share that was there keeps what the page does not edit (compression).
            let compress = c
                .shares
                .iter()
                .find(|old| old.name == name)
                .map(|old| old.compress)
                .unwrap_or(true);
            shares.push(ShareConfig {
                name,
                path,
                encrypt: s.encrypt,
                encrypt_names,
                compress,
                exclude,
                excludes,
                retention: s.retention.unwrap_or_default(),
                schedule,
            });
        }
        c.shares = shares;
        Ok(())
    })
    .await;
    saved(&app, result)
}

#[derive(Deserialize)]
struct BrowseQuery {
    #[serde(default)]
    path: Option<String>,
}

async fn get_browse(State(app): State<Shared>, Query(q): Query<BrowseQuery>) -> Response {
    let c = app.config();
    let volumes: Vec<String> = c
        .web
        .data_volumes
        .iter()
        .filter(|v| v.is_dir())
        .map(|v| lossy(v))
        .collect();
    let Some(path) = q.path.filter(|p| !p.is_empty()) else {
        return Json(serde_json::json!({ "path": null, "dirs": volumes, "volumes": volumes }))
            .into_response();
    };
    let real = match inside_volumes(&c, &path) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut dirs: Vec<String> = match std::fs::read_dir(&real) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .take(2000)
            .collect(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{path}: {e}")),
    };
    dirs.sort();
    let dirs: Vec<String> = dirs.iter().map(|d| lossy(&real.join(d))).collect();
    Json(serde_json::json!({ "path": lossy(&real), "dirs": dirs, "volumes": volumes }))
        .into_response()
}

// ---- PUT /api/schedule, PUT /api/notify ---------------------------------------------------------

async fn put_schedule(State(app): State<Shared>, Json(b): Json<ScheduleView>) -> Response {
    let result = change_config(&app, |c| {
        if b.jitter_minutes > 180 {
            return Err("schedule.jitter_minutes: at most 180".into());
        }
        let window = scheduler::Window::parse(b.at.trim(), b.jitter_minutes)
            .map_err(|e| format!("schedule.at: {e}"))?;
        c.schedule.enabled = b.enabled;
        c.schedule.policy.window = window;
        for s in &mut c.shares {
            if let Some(w) = &mut s.schedule {
                w.jitter_minutes = b.jitter_minutes;
            }
        }
        Ok(())
    })
    .await;
    saved(&app, result)
}

#[derive(Deserialize)]
struct NotifyBody {
    #[serde(default)]
    on_success: bool,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    smtp: Option<SmtpView>,
    /// A new SMTP password (kept if absent).
    #[serde(default)]
    smtp_password: Option<String>,
}

async fn put_notify(State(app): State<Shared>, Json(b): Json<NotifyBody>) -> Response {
    let result = change_config(&app, |c| {
        let webhook = b
            .webhook
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty());
        if let Some(w) = &webhook
            && !(w.starts_with("https://") || w.starts_with("http://"))
        {
            return Err(format!("notify.webhook {w:?}: expected an https:// URL"));
        }
        let smtp = match b.smtp.filter(|m| !m.host.trim().is_empty()) {
            None => None,
            Some(m) => {
                let user = m
                    .user
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty());
                let password_file = c.state_dir.join("smtp-password");
                if let Some(p) = &b.smtp_password {
                    write_secret(&password_file, p)
                        .map_err(|e| format!("writing {}: {e}", password_file.display()))?;
                }
                let to: Vec<String> =
                    m.to.iter()
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect();
                if to.is_empty() || m.from.trim().is_empty() {
                    return Err("notify.smtp: give the sender and at least one recipient".into());
                }
                if user.is_some() && !password_file.exists() {
                    return Err("notify.smtp: a user needs a password".into());
                }
                Some(SmtpConfig {
                    host: m.host.trim().to_owned(),
                    port: m.port,
                    tls: if m.starttls {
                        SmtpTls::Starttls
                    } else {
                        SmtpTls::Implicit
                    },
                    password_file: user.as_ref().map(|_| password_file),
                    user,
                    from: m.from.trim().to_owned(),
                    to,
                    ca_file: c.notify.smtp.as_ref().and_then(|o| o.ca_file.clone()),
                })
            }
        };
        c.notify = NotifyConfig {
            on_success: b.on_success,
            webhook,
            smtp,
        };
        Ok(())
    })
    .await;
    saved(&app, result)
}

/// A secret file: mode 0600 from the start, replaced atomically.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".offsite-secret.")
        .tempfile_in(dir)?;
    tmp.write_all(secret.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Every settings route needs the session, and every one but `GET` its CSRF token too; checked before
/// the body is read, so a stranger's request gets nothing but 401 (or 403), whatever its body.
async fn require_session(
    State(app): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let checked = if req.method() == axum::http::Method::GET {
        session(&app, req.headers()).map(|_| ())
    } else {
        session_and_csrf(&app, req.headers())
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(d) => d.into_response(),
    }
}

/// The settings routes.
pub(crate) fn routes(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/config", get(get_config))
        .route("/api/key", post(post_key))
        .route("/api/target", put(put_target))
        .route("/api/ssh-key", get(get_ssh_key).post(post_ssh_key))
        .route("/api/host-key/test", post(post_host_key_test))
        .route("/api/host-key/trust", post(post_host_key_trust))
        .route("/api/shares", put(put_shares))
        .route("/api/browse", get(get_browse))
        .route("/api/schedule", put(put_schedule))
        .route("/api/notify", put(put_notify))
        .merge(crate::bundle_api::routes())
        .route_layer(axum::middleware::from_fn_with_state(app, require_session))
}
