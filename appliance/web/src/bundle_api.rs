//! The config bundle on the page: a bundle found on a USB key is staged, never applied by itself; an
//! admin applies it with its passphrase (or dismisses it), and can export the box's own bundle.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/bundle` | the staged bundle (file, when found, size) and the USB keys a bundle can be written to |
//! | `POST /api/bundle/import` | applies the staged bundle (`{passphrase}`): the same checks as `offsite import-bundle` ([`backup::bundle_io::import`]) |
//! | `POST /api/bundle/dismiss` | forgets the staged bundle |
//! | `POST /api/bundle/export` | seals the config (`{passphrase, with_keys, password, to}`); `to` absent: the answer is the file; `to` = a listed USB key: written there |
//!
//! Every import attempt (applied, refused, dismissed) is a line in `offsite-import.log` beside the config
//! and in the page's log: who, when, which file, what changed or why not; never a secret. Exporting the
//! keys asks for the admin password again. All routes need the session, all but `GET` its CSRF token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use backup::bundle_io;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::api::{App, ClientIp, error, lock};
use crate::auth::LoginError;

type Shared = Arc<App>;

/// The file name a bundle has on a USB key.
pub const BUNDLE_FILE: &str = "offsite-bundle";

/// A bundle read from a USB key, waiting for an admin.
pub struct Staged {
    pub file: PathBuf,
    pub found: jiff::Timestamp,
    pub bytes: Vec<u8>,
}

impl App {
    /// A bundle the USB watcher found: staged if its header is sound (a newer one replaces an older
    /// one), else only logged. Nothing is applied here.
    pub fn stage_bundle(&self, file: PathBuf, bytes: Result<Vec<u8>, String>) {
        let config = self.config();
        let source = file.display().to_string();
        let checked = bytes.and_then(|b| {
            bundle::check_header(&b)
                .map(|_| b)
                .map_err(|e| format!("{source}: {e}"))
        });
        let line = match checked {
            Ok(bytes) => {
                let size = bytes.len();
                *lock(&self.staged) = Some(Staged {
                    file,
                    found: jiff::Timestamp::now(),
                    bytes,
                });
                format!(
                    "staged ({size} bytes): waiting for an admin to enter its passphrase on the page"
                )
            }
            Err(e) => format!("refused: {e}"),
        };
        self.import_attempt(&config.file, "USB watcher", &source, &line);
    }

    /// Logs an import attempt in `offsite-import.log` beside `config_file` and in the page's log.
    fn import_attempt(&self, config_file: &Path, who: &str, source: &str, line: &str) {
        tracing::info!("web: config bundle {source}: {line}");
        self.log_line(format!("config bundle {source}: {line}"));
        if let Err(e) = bundle_io::log_attempt(config_file, who, source, line) {
            tracing::warn!("web: {e}");
            self.log_line(e);
        }
    }
}

async fn get_bundle(State(app): State<Shared>) -> Response {
    let staged = lock(&app.staged).as_ref().map(|s| {
        serde_json::json!({
            "file": s.file.to_string_lossy(),
            "found": s.found.to_string(),
            "size": s.bytes.len(),
        })
    });
    Json(serde_json::json!({
        "staged": staged,
        "usb_keys": writable_keys(&app),
        "key_missing": !app.config().key_file.exists(),
    }))
    .into_response()
}

/// The mounted USB keys a bundle can be written to (a key mounted read-only is not one).
fn writable_keys(app: &App) -> Vec<String> {
    let config = app.config();
    if !config.usb.enabled {
        return Vec::new();
    }
    usb::mounted(&config.usb.watch)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| usb::writable(p))
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[derive(Deserialize)]
struct ImportBody {
    passphrase: String,
}

async fn post_import(
    State(app): State<Shared>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(b): Json<ImportBody>,
) -> Response {
    let passphrase = Zeroizing::new(b.passphrase.into_bytes());
    let _guard = crate::settings::WRITING.lock().await;
    let Some((file, bytes)) = lock(&app.staged)
        .as_ref()
        .map(|s| (s.file.clone(), s.bytes.clone()))
    else {
        return error(StatusCode::NOT_FOUND, "no config bundle is waiting");
    };
    let dest = app.config().file.clone();
    let source = file.display().to_string();
    let who = format!("admin from {ip}");
    let result = {
        let (dest, source) = (dest.clone(), source.clone());
        // Argon2id takes seconds on a small box: off the page's threads.
        tokio::task::spawn_blocking(move || bundle_io::import(&dest, &bytes, &passphrase, &source))
            .await
            .unwrap_or_else(|e| Err(format!("the import stopped: {e}")))
    };
    match result {
        Ok(imported) => {
            let changes = imported.changes.clone();
            let handed = app.service.set_config(imported.config).await;
            lock(&app.staged).take();
            app.import_attempt(
                &dest,
                &who,
                &source,
                &format!("imported: {}", changes.join("; ")),
            );
            if let Err(e) = handed {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the bundle was written, but the service did not take it: {e}"),
                );
            }
            Json(serde_json::json!({ "changes": changes })).into_response()
        }
        Err(e) => {
            app.import_attempt(&dest, &who, &source, &format!("rejected: {e}"));
            error(StatusCode::BAD_REQUEST, &e)
        }
    }
}

async fn post_dismiss(
    State(app): State<Shared>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
) -> Response {
    let Some(s) = lock(&app.staged).take() else {
        return error(StatusCode::NOT_FOUND, "no config bundle is waiting");
    };
    let dest = app.config().file.clone();
    app.import_attempt(
        &dest,
        &format!("admin from {ip}"),
        &s.file.display().to_string(),
        "dismissed: nothing changed",
    );
    Json(serde_json::json!({ "dismissed": true })).into_response()
}

#[derive(Deserialize)]
struct ExportBody {
    passphrase: String,
    #[serde(default)]
    with_keys: bool,
    /// The admin password, needed with `with_keys`.
    #[serde(default)]
    password: String,
    /// A USB key from `GET /api/bundle`'s list; absent: the answer is the file.
    #[serde(default)]
    to: Option<String>,
}

async fn post_export(
    State(app): State<Shared>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(b): Json<ExportBody>,
) -> Response {
    let passphrase = Zeroizing::new(b.passphrase.into_bytes());
    let password = Zeroizing::new(b.password);
    if let Err(e) = bundle_io::check_passphrase(&passphrase) {
        return error(StatusCode::BAD_REQUEST, &e);
    }
    if b.with_keys {
        // Argon2id: off the async thread (which also runs backups).
        let a = app.clone();
        let pw = password.clone();
        let verified = match tokio::task::spawn_blocking(move || a.auth.verify(ip, &pw)).await {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("checking the password: {e}"),
                );
            }
        };
        match verified {
            Ok(()) => {}
            Err(LoginError::TooSoon(_)) => {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many wrong passwords: wait and try again",
                );
            }
            Err(_) => {
                tracing::warn!("web: wrong password for a key export from {ip}");
                return error(
                    StatusCode::FORBIDDEN,
                    "wrong admin password (exporting the keys needs it)",
                );
            }
        }
    }
    let to = match &b.to {
        None => None,
        Some(t) => {
            if !writable_keys(&app).iter().any(|k| k == t) {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{t}: not a mounted USB key this box can write to"),
                );
            }
            Some(Path::new(t).join(BUNDLE_FILE))
        }
    };
    let _guard = crate::settings::WRITING.lock().await;
    let config = app.config();
    let with_keys = b.with_keys;
    let sealed = tokio::task::spawn_blocking(move || {
        bundle_io::export(&config, with_keys, &passphrase).and_then(|e| match &to {
            Some(out) => bundle_io::write_bundle(out, &e.bytes).map(|()| (e, to)),
            None => Ok((e, None)),
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("the export stopped: {e}")));
    let (exported, written) = match sealed {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let what = if exported.with_key {
        "with the keys"
    } else {
        "without keys"
    };
    let line = format!(
        "config bundle exported {what} by admin from {ip}{}",
        written
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_else(|| " as a download".into())
    );
    tracing::info!("web: {line}");
    app.log_line(line);
    match written {
        Some(p) => Json(serde_json::json!({ "written": p.to_string_lossy() })).into_response(),
        None => {
            let mut r = exported.bytes.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"offsite-bundle\""),
            );
            r
        }
    }
}

/// The bundle routes (behind the settings' session check).
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/bundle", get(get_bundle))
        .route("/api/bundle/import", post(post_import))
        .route("/api/bundle/dismiss", post(post_dismiss))
        .route("/api/bundle/export", post(post_export))
}
