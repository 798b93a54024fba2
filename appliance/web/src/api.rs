//! The routes: the page's static assets, and a JSON API behind the admin session.
//!
//! | route | session | CSRF | what |
//! |---|---|---|---|
//! | `GET /`, `/*.js`, `/style.css` | no | no | the page (embedded from `web-ui/`) |
//! | `GET /api/session` | no | no | `{setup_needed, logged_in, csrf}` |
//! | `POST /api/setup` | no | no | first password, with the console's setup code; logs in |
//! | `POST /api/login` | no | no | password → session cookie + CSRF token (slowed after failures) |
//! | `POST /api/logout` | yes | yes | ends the session |
//! | `GET /api/status` | yes | no | running run and its counters, next runs, last result |
//! | `GET /api/events` | yes | no | the service's events as server-sent events |
//! | `GET /api/history` | yes | no | the last run reports |
//! | `GET /api/log` | yes | no | the service's last log lines |
//! | `POST /api/run` | yes | yes | run now (`{shares}`) |
//! | `POST /api/cancel` | yes | yes | cancel the run in progress |
//! | `POST /api/notify/test` | yes | yes | a test notification through `[notify]` → `{ok}` or `{error}` |
//! | `GET /api/shares` | yes | no | the config's shares and data volumes (restore screen) |
//! | `GET /api/snapshots?share=` | yes | no | a share's snapshots, newest first (id, time, files, bytes) |
//! | `GET /api/ls?share=&snapshot=&path=` | yes | no | one folder of a snapshot, plaintext names |
//! | `GET /api/download?share=&snapshot=&path=` | yes | no | a file as itself, a folder as a tar stream |
//! | `POST /api/restore` | yes | yes | restore into a folder in a data volume (`{share, snapshot, paths, to, overwrite}`) → `{job}` |
//! | `GET /api/restore/JOB` | yes | no | a restore's progress, outcome and per-file problems |
//!
//! Every response carries a strict Content-Security-Policy (same origin only, no inline script), no framing
//! and no caching of API answers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service::Event;

use crate::auth::{Auth, LoginError};

const COOKIE: &str = "offsite_session";

/// The client's address (for the login brake).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// What the page shows at a glance, kept up to date from the service's events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The run in progress: its slot, shares, and the latest counters per share.
    pub running: Option<Running>,
    /// Next scheduled run per slot.
    pub next: BTreeMap<String, Event>,
    /// The last run that ended.
    pub last: Option<Event>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Running {
    pub slot: String,
    pub shares: Vec<String>,
    pub progress: BTreeMap<String, backup::progress::Counters>,
    /// Files the last good run of these shares had (the walk streams, so this run's total is unknown
    /// until it ends): the page's progress bar measures against it.
    pub expected_files: Option<u64>,
}

impl Status {
    /// Folds one event in.
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::Scheduled { slot, .. } => {
                self.next.insert(slot.clone(), e.clone());
            }
            Event::RunStarted { slot, shares } => {
                self.running = Some(Running {
                    slot: slot.clone(),
                    shares: shares.clone(),
                    progress: BTreeMap::new(),
                    expected_files: None,
                });
            }
            Event::Progress { share, counters } => {
                if let Some(r) = &mut self.running {
                    r.progress.insert(share.clone(), *counters);
                }
            }
            Event::RunFinished { .. } => {
                self.running = None;
                self.last = Some(e.clone());
            }
            Event::Skipped { .. } | Event::Refused { .. } | Event::StateError { .. } => {}
        }
    }
}

/// Everything the routes use.
pub struct App {
    pub auth: Auth,
    pub service: service::Handle,
    pub state_dir: PathBuf,
    pub status: Mutex<Status>,
    /// The key file's passphrase, if it has one.
    pub passphrase: Option<Vec<u8>>,
    /// The last lines of the service's log (its events, as `offsite serve` prints them).
    pub log: Mutex<std::collections::VecDeque<String>>,
    /// The target's free space, as last asked.
    pub remote_space: Mutex<RemoteSpace>,
    /// A config bundle from a USB key, waiting for an admin.
    pub staged: Mutex<Option<crate::bundle_api::Staged>>,
}

/// The target's free space: asked in the background when the status is read and the last answer is
/// older than [`RemoteSpace::MAX_AGE`] or a run has ended since.
#[derive(Debug, Default)]
pub struct RemoteSpace {
    pub free_bytes: Option<u64>,
    /// Why there is no figure (the target does not tell, or could not be asked).
    pub note: Option<String>,
    pub checked: Option<std::time::Instant>,
    pub asking: bool,
}

impl RemoteSpace {
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);
}

/// Asks the target for its free space in the background, unless an answer is fresh or a question runs.
fn refresh_remote_space(app: &Arc<App>) {
    {
        let mut rs = lock(&app.remote_space);
        let fresh = rs
            .checked
            .is_some_and(|t| t.elapsed() < RemoteSpace::MAX_AGE);
        if fresh || rs.asking {
            return;
        }
        rs.asking = true;
    }
    let app = app.clone();
    tokio::spawn(async move {
        let target = app.config().target.clone();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            backup::remote_ops::free_space(&target),
        )
        .await;
        let mut rs = lock(&app.remote_space);
        (rs.free_bytes, rs.note) = match answer {
            Ok(Ok(Some(b))) => (Some(b), None),
            Ok(Ok(None)) => (
                None,
                Some("the target does not report its free space".into()),
            ),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some("the target did not answer within a minute".into()),
            ),
        };
        rs.checked = Some(std::time::Instant::now());
        rs.asking = false;
    });
}

/// Lines the log view keeps.
pub const LOG_LINES: usize = 300;

impl App {
    /// The config in force (the page's settings change it).
    pub fn config(&self) -> Arc<backup::Config> {
        self.service.config()
    }

    /// Adds a line to the page's log view (stamped with the box's local time).
    pub fn log_line(&self, line: String) {
        let stamp = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S");
        let mut log = lock(&self.log);
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(format!("{stamp} {line}"));
    }

    /// The master key of the config in force.
    pub fn master_key(&self) -> Result<seal::MasterKey, String> {
        let config = self.config();
        seal::MasterKey::load(&config.key_file, self.passphrase.as_deref())
            .map_err(|e| format!("key file {}: {e}", config.key_file.display()))
    }
}

type Shared = Arc<App>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Why a request was turned away.
pub(crate) enum Denied {
    NoSession,
    BadCsrf,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::NoSession => error(StatusCode::UNAUTHORIZED, "log in first"),
            Denied::BadCsrf => error(StatusCode::FORBIDDEN, "missing or wrong CSRF token"),
        }
    }
}

/// The session's CSRF token, or 401.
pub(crate) fn session(app: &App, headers: &HeaderMap) -> Result<String, Denied> {
    cookie_token(headers)
        .and_then(|t| app.auth.session(t))
        .ok_or(Denied::NoSession)
}

/// A live session and its CSRF token in `X-CSRF-Token`, or 401/403.
pub(crate) fn session_and_csrf(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    let csrf = session(app, headers)?;
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq::constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Denied::BadCsrf)
    }
}

fn with_cookie(token: &str, max_age: u64, body: Response) -> Response {
    let mut r = body;
    let c =
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn get_session(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let csrf = session(&app, &headers).ok();
    let setup_needed = app.auth.needs_setup();
    Json(serde_json::json!({
        "setup_needed": setup_needed,
        "logged_in": csrf.is_some(),
        "csrf": csrf,
        // Only a box that is not set up says so before a login (its first-run screen offers the import).
        "bundle_waiting": setup_needed && lock(&app.staged).is_some(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SetupBody {
    code: String,
    password: String,
}

async fn post_setup(State(app): State<Shared>, Json(b): Json<SetupBody>) -> Response {
    // Argon2id takes a good part of a second on a small box: off the thread that also runs backups.
    let a = app.clone();
    let set = tokio::task::spawn_blocking(move || a.auth.set_first_password(&b.code, &b.password))
        .await
        .unwrap_or_else(|e| Err(format!("setting the password: {e}")));
    if let Err(e) = set {
        tracing::warn!("web: first-run setup refused: {e}");
        return error(StatusCode::FORBIDDEN, &e);
    }
    tracing::info!("web: the admin password was set");
    match app.auth.open_session() {
        Ok((token, csrf)) => with_cookie(
            &token,
            12 * 3600,
            Json(serde_json::json!({ "csrf": csrf })).into_response(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    password: String,
}

async fn post_login(
    State(app): State<Shared>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(b): Json<LoginBody>,
) -> Response {
    // Argon2id, like the setup above: off the async thread.
    let a = app.clone();
    let login = match tokio::task::spawn_blocking(move || a.auth.login(ip, &b.password)).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("checking the password: {e}"),
            );
        }
    };
    match login {
        Ok((token, csrf)) => {
            tracing::info!("web: admin logged in from {ip}");
            with_cookie(
                &token,
                12 * 3600,
                Json(serde_json::json!({ "csrf": csrf })).into_response(),
            )
        }
        Err(LoginError::TooSoon(wait)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins: wait and try again",
            );
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(LoginError::Wrong) => {
            tracing::warn!("web: failed login from {ip}");
            error(StatusCode::UNAUTHORIZED, "wrong password")
        }
        Err(LoginError::NotSetUp) => error(
            StatusCode::CONFLICT,
            "no admin password yet: use the first-run setup",
        ),
    }
}

async fn post_logout(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session_and_csrf(&app, &headers) {
        return r.into_response();
    }
    if let Some(t) = cookie_token(&headers) {
        app.auth.logout(t);
    }
    with_cookie("", 0, StatusCode::NO_CONTENT.into_response())
}

/// Per share: when it last made a snapshot (run ok or partial) and with how many files.
#[derive(Serialize)]
struct ShareGlance {
    name: String,
    last_success: Option<String>,
    last_files: Option<u64>,
}

async fn get_status(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    let mut s = lock(&app.status).clone();
    let config = app.config();
    let reports = recent_reports(&app.state_dir, 100);
    let shares: Vec<ShareGlance> = config
        .shares
        .iter()
        .map(|sh| {
            let good = reports.iter().find_map(|r| {
                let rep = r["shares"]
                    .as_array()?
                    .iter()
                    .find(|x| x["share"] == sh.name.as_str())?;
                matches!(rep["status"].as_str(), Some("ok" | "partial")).then(|| {
                    (
                        r["started"].as_str().unwrap_or_default().to_owned(),
                        rep["counters"]["files"].as_u64(),
                    )
                })
            });
            ShareGlance {
                name: sh.name.clone(),
                last_success: good.as_ref().map(|g| g.0.clone()),
                last_files: good.and_then(|g| g.1),
            }
        })
        .collect();
    if let Some(r) = &mut s.running {
        let expected: u64 = shares
            .iter()
            .filter(|g| r.shares.is_empty() || r.shares.contains(&g.name))
            .filter_map(|g| g.last_files)
            .sum();
        r.expected_files = (expected > 0).then_some(expected);
    }
    refresh_remote_space(&app);
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["shares"] = serde_json::to_value(&shares).unwrap_or_default();
    {
        let rs = lock(&app.remote_space);
        v["remote_space"] = serde_json::json!({ "free_bytes": rs.free_bytes, "note": rs.note });
    }
    v["key_missing"] = (!config.key_file.exists()).into();
    v["bundle_staged"] = lock(&app.staged)
        .as_ref()
        .map(|b| b.file.to_string_lossy().into_owned())
        .into();
    Json(v).into_response()
}

async fn get_events(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    // Every run's start and end reach the page, however slow its connection (`service::events`).
    let stream = futures_util::stream::unfold(app.service.subscribe(), |mut events| async move {
        // An event that does not serialize is skipped, as before (none is expected to fail).
        loop {
            let e = events.recv().await?;
            if let Ok(data) = serde_json::to_string(&e) {
                return Some((
                    Ok::<_, Infallible>(sse::Event::default().data(data)),
                    events,
                ));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(sse::KeepAlive::default())
        .into_response()
}

/// The newest run reports (at most `n`), newest first.
fn recent_reports(state_dir: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let dir = state_dir.join("reports");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.reverse();
    names
        .iter()
        .take(n)
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The newest run reports (at most 50), newest first.
async fn get_history(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    Json(recent_reports(&app.state_dir, 50)).into_response()
}

/// The service's recent log lines, oldest first.
async fn get_log(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    let lines: Vec<String> = lock(&app.log).iter().cloned().collect();
    Json(serde_json::json!({ "lines": lines })).into_response()
}

#[derive(Deserialize, Default)]
struct RunBody {
    #[serde(default)]
    shares: Vec<String>,
}

async fn post_run(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Option<Json<RunBody>>,
) -> Response {
    if let Err(r) = session_and_csrf(&app, &headers) {
        return r.into_response();
    }
    let shares = body.map(|b| b.0.shares).unwrap_or_default();
    match app.service.send(service::Command::RunNow { shares }).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn post_cancel(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session_and_csrf(&app, &headers) {
        return r.into_response();
    }
    match app.service.send(service::Command::Cancel).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../../web-ui/index.html"),
    )
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../web-ui/app.js"),
    )
}

async fn settings_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../web-ui/settings.js"),
    )
}

async fn bundle_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../web-ui/bundle.js"),
    )
}

async fn restore_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../web-ui/restore.js"),
    )
}

async fn style_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../web-ui/style.css"),
    )
}

async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // No HSTS: with a self-signed certificate it would only turn a future certificate change into a
    // page the owner cannot open at all.
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The whole API.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/settings.js", get(settings_js))
        .route("/restore.js", get(restore_js))
        .route("/bundle.js", get(bundle_js))
        .route("/style.css", get(style_css))
        .route("/api/session", get(get_session))
        .route("/api/setup", post(post_setup))
        .route("/api/login", post(post_login))
        .route("/api/logout", post(post_logout))
        .route("/api/status", get(get_status))
        .route("/api/events", get(get_events))
        .route("/api/history", get(get_history))
        .route("/api/log", get(get_log))
        .route("/api/run", post(post_run))
        .route("/api/cancel", post(post_cancel))
        .merge(crate::settings::routes(app.clone()))
        .merge(crate::restore_api::routes())
        .merge(crate::notify_api::routes())
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(app)
}
