//! The restore screen's routes: a share's snapshots, a snapshot's folders with plaintext names, downloads
//! (a file as itself, a folder as a tar stream) and restores into a folder on the box, run in the
//! background with their per-file report.
//!
//! Everything goes through the restore engine (`backup::restore`): every byte sent or written was
//! authenticated against the snapshot's sealed manifest first. The engine runs on a thread of its own with
//! a one-thread runtime (its unsealing worker blocks, and a download's writer waits for the network), so the
//! page's runtime never blocks on it.
//!
//! Paths are bytes: the API sends each name lossily as `name` for display, and its path relative to the
//! share as `enc`, percent-encoded bytes (`/` kept), which round-trips: `path=` in a query string is
//! URL-decoded to bytes, and the `paths` of `POST /api/restore` are decoded the same way (`%` must be sent
//! as `%25`).
//!
//! Streaming: a download's bytes go from the engine through a bounded channel (4 chunks of at most 64 KiB)
//! to a relay thread and another bounded channel to the HTTP body, so memory does not grow with the file
//! and a slow client slows the pull. A folder's tar holds only files the engine verified (it spools and
//! checks each before archiving); if any entry fails, the stream is cut short (the client sees a failed
//! download, not an archive that silently lacks a file) and the problems are logged. A single file is
//! restored into a temporary folder under `<state_dir>/tmp/` (written there only once verified), then
//! streamed from it; a damaged file is a JSON error before any byte is sent.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backup::manifest::{EntryKind, ManifestEntry};
use backup::restore::catalog::{self, Manifest, SummaryCache};
use backup::restore::pull::{self, EventFn, Mode};
use backup::restore::{CheckEvent, CheckReport, FileProblem};
use backup::snapshot::SnapshotId;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{App, error, lock, session, session_and_csrf};

type Shared = Arc<App>;

/// Entries of one folder sent at most (a bigger folder says how many it has).
const MAX_LISTED: usize = 5000;
/// Finished restore jobs kept for `GET /api/restore/JOB`.
const KEPT_JOBS: usize = 8;
const CHUNK: usize = 64 * 1024;

/// The restore routes (merged into [`crate::api::router`]).
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/shares", get(get_shares))
        .route("/api/snapshots", get(get_snapshots))
        .route("/api/ls", get(get_ls))
        .route("/api/download", get(get_download))
        .route("/api/restore", post(post_restore))
        .route("/api/restore/{job}", get(get_job))
}

/// An error answer: `{error}` with a status.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// What the engine says about the target (its data, the connection): the upstream's fault.
    fn engine(e: backup::Error) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.code, &self.message)
    }
}

type Answer = Result<Response, ApiError>;

// ---------------------------------------------------------------------------------------------------
// Paths as bytes

/// Percent-encodes `bytes`, keeping ASCII letters, digits, `-._~` and `/` (safe in a query value).
fn enc(bytes: &[u8]) -> String {
    enc_keeping(bytes, b"-._~/")
}

fn enc_keeping(bytes: &[u8], keep: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Decodes `%XX` escapes (and `+` as a space in a query string) to bytes.
fn unpercent(s: &[u8], plus_is_space: bool) -> Result<Vec<u8>, String> {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let pair = s
                    .get(i + 1)
                    .and_then(|&a| hex(a))
                    .zip(s.get(i + 2).and_then(|&b| hex(b)));
                let Some((a, b)) = pair else {
                    return Err(format!(
                        "{:?}: a % must start an escape like %25",
                        String::from_utf8_lossy(s)
                    ));
                };
                out.push(a << 4 | b);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The query string's parameters, values as bytes (the last of a repeated name wins).
fn params(uri: &Uri) -> Result<HashMap<String, Vec<u8>>, ApiError> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unpercent(k.as_bytes(), true).map_err(ApiError::bad)?;
        let v = unpercent(v.as_bytes(), true).map_err(ApiError::bad)?;
        out.insert(String::from_utf8_lossy(&k).into_owned(), v);
    }
    Ok(out)
}

fn text_param(q: &HashMap<String, Vec<u8>>, name: &str) -> Result<Option<String>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => String::from_utf8(v.clone())
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{name}: not UTF-8"))),
    }
}

/// The share named by `share=`, which must be in the config.
fn share_param(app: &App, q: &HashMap<String, Vec<u8>>) -> Result<String, ApiError> {
    let share = text_param(q, "share")?.ok_or_else(|| ApiError::bad("share= is missing"))?;
    check_share(app, &share)?;
    Ok(share)
}

fn check_share(app: &App, share: &str) -> Result<(), ApiError> {
    if app.config().shares.iter().any(|s| s.name == share) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "share {share:?}: not in the config"
        )))
    }
}

/// One path relative to the share root, normalized (empty: the root).
fn share_rel(share: &str, raw: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut v = pull::normalize_paths(&[raw.to_vec()]).map_err(|_| {
        ApiError::bad(format!(
            "share {share}: {:?} is not a path inside the share (no `..`, no empty parts)",
            String::from_utf8_lossy(raw)
        ))
    })?;
    Ok(v.pop().unwrap_or_default())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

// ---------------------------------------------------------------------------------------------------
// The engine's thread

/// Runs `f` on a thread of its own (the engine blocks: its unsealing worker, a download's writer) and
/// hands its result back to the calling task.
async fn on_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| ApiError::internal(format!("starting a thread: {e}")))?;
    rx.await
        .map_err(|_| ApiError::internal("the restore thread stopped"))?
}

/// A one-thread runtime for the engine's thread.
fn runtime() -> Result<tokio::runtime::Runtime, ApiError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::internal(format!("starting an async runtime: {e}")))
}

/// What the engine needs from the config in force.
struct Ctx {
    config: Arc<backup::Config>,
    keys: seal::Keys,
}

impl Ctx {
    fn new(app: &App) -> Result<Ctx, ApiError> {
        let keys = app.master_key().map_err(ApiError::internal)?.derive_keys();
        Ok(Ctx {
            config: app.config(),
            keys,
        })
    }

    fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// The cache key of a snapshot's manifest.
    fn manifest_key(&self, share: &str, snap: &SnapshotId) -> String {
        format!(
            "{}\0{}\0{share}\0{snap}",
            backup::remote_ops::describe(&self.config.target),
            self.config.key_file.display()
        )
    }
}

/// The last manifest opened for browsing (its plaintext is a temporary file; a complete snapshot never
/// changes, so clicking through its folders needs no new connection).
static BROWSED: Mutex<Option<(String, Manifest)>> = Mutex::new(None);

/// Takes the cached manifest of `share`/`snap`, if it is the one cached.
fn take_cached(ctx: &Ctx, share: &str, snap: &SnapshotId) -> Option<Manifest> {
    let key = ctx.manifest_key(share, snap);
    let mut slot = lock(&BROWSED);
    match slot.take() {
        Some((k, m)) if k == key => Some(m),
        other => {
            *slot = other;
            None
        }
    }
}

fn put_cached(ctx: &Ctx, share: &str, snap: &SnapshotId, m: Manifest) {
    *lock(&BROWSED) = Some((ctx.manifest_key(share, snap), m));
}

/// The snapshot `wanted` (or the newest complete one) of `share`, and its opened manifest (cached).
async fn open_snapshot(
    ctx: &Ctx,
    share: &str,
    wanted: Option<&str>,
) -> Result<(SnapshotId, Manifest), ApiError> {
    if let Some(w) = wanted
        && let Some(id) = SnapshotId::parse(w)
        && let Some(m) = take_cached(ctx, share, &id)
    {
        return Ok((id, m));
    }
    let remote = catalog::connect(&ctx.config.target)
        .await
        .map_err(ApiError::engine)?;
    let got = async {
        let on = catalog::snapshots(&remote, &ctx.config.target, share)
            .await
            .map_err(ApiError::engine)?;
        let snap = catalog::choose_snapshot(&on, share, wanted)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let m = catalog::fetch_manifest(
            &remote,
            &ctx.config.target,
            &ctx.keys,
            share,
            &snap,
            ctx.state_dir(),
        )
        .await
        .map_err(ApiError::engine)?;
        Ok((snap, m))
    }
    .await;
    let _ = remote.close().await;
    got
}

/// The entry at `path` (`None`: not in the snapshot; the root is a folder with no entry).
fn find_entry(m: &mut Manifest, path: &[u8]) -> Result<Option<ManifestEntry>, ApiError> {
    let what = format!("the manifest of {}/{}", m.share, m.snapshot);
    let mut r = m.entries().map_err(ApiError::engine)?;
    while let Some(e) = r
        .next_entry()
        .map_err(|e| ApiError::internal(format!("{what}: {e}")))?
    {
        if e.path == path {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------------
// GET /api/shares, /api/snapshots, /api/ls

#[derive(Serialize)]
struct ShareRow {
    name: String,
    encrypt: bool,
}

/// The shares of the config, and the folders a restore may write into.
async fn get_shares(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    let config = app.config();
    let shares: Vec<ShareRow> = config
        .shares
        .iter()
        .map(|s| ShareRow {
            name: s.name.clone(),
            encrypt: s.encrypt,
        })
        .collect();
    let volumes: Vec<String> = config
        .web
        .data_volumes
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Json(serde_json::json!({ "shares": shares, "data_volumes": volumes })).into_response()
}

#[derive(Serialize)]
struct SnapshotRow {
    id: String,
    /// RFC 3339, UTC.
    time: String,
    complete: bool,
    files: Option<u64>,
    bytes: Option<u64>,
}

async fn get_snapshots(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    snapshots(app, uri).await.into_response()
}

async fn snapshots(app: Shared, uri: Uri) -> Answer {
    let q = params(&uri)?;
    let share = share_param(&app, &q)?;
    let ctx = Ctx::new(&app)?;
    let sh = share.clone();
    let rows = on_thread("offsite-snapshots", move || {
        runtime()?.block_on(async {
            let remote = catalog::connect(&ctx.config.target)
                .await
                .map_err(ApiError::engine)?;
            // The share's snapshots, newest first, with their totals (counted once per box, then
            // cached).
            let rows = async {
                let on = catalog::snapshots(&remote, &ctx.config.target, &sh)
                    .await
                    .map_err(ApiError::engine)?;
                let mut cache = SummaryCache::load(ctx.state_dir());
                let mut rows = Vec::new();
                for (id, complete) in on.snapshots.iter().rev() {
                    let summary = match (complete, cache.get(&sh, id)) {
                        (false, _) => None,
                        (true, Some(s)) => Some(s),
                        (true, None) => {
                            let mut m = catalog::fetch_manifest(
                                &remote,
                                &ctx.config.target,
                                &ctx.keys,
                                &sh,
                                id,
                                ctx.state_dir(),
                            )
                            .await
                            .map_err(ApiError::engine)?;
                            let s = m.summary().map_err(ApiError::engine)?;
                            cache.put(&sh, id, s);
                            Some(s)
                        }
                    };
                    rows.push(SnapshotRow {
                        id: id.to_string(),
                        time: id.timestamp().to_string(),
                        complete: *complete,
                        files: summary.map(|s| s.files),
                        bytes: summary.map(|s| s.bytes),
                    });
                }
                cache.save(&sh, &on);
                Ok::<_, ApiError>(rows)
            }
            .await;
            let _ = remote.close().await;
            rows
        })
    })
    .await?;
    Ok(Json(serde_json::json!({ "share": share, "snapshots": rows })).into_response())
}

#[derive(Serialize)]
struct EntryRow {
    name: String,
    /// The entry's path relative to the share, percent-encoded bytes.
    enc: String,
    kind: &'static str,
    size: u64,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

#[derive(Serialize)]
struct Crumb {
    name: String,
    enc: String,
}

async fn get_ls(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    ls(app, uri).await.into_response()
}

async fn ls(app: Shared, uri: Uri) -> Answer {
    let q = params(&uri)?;
    let share = share_param(&app, &q)?;
    let wanted = text_param(&q, "snapshot")?;
    let dir = share_rel(&share, q.get("path").map(Vec::as_slice).unwrap_or_default())?;
    let ctx = Ctx::new(&app)?;
    let sh = share.clone();
    let d = dir.clone();
    let (snap, entries) = on_thread("offsite-ls", move || {
        let rt = runtime()?;
        let (snap, mut m) = rt.block_on(open_snapshot(&ctx, &sh, wanted.as_deref()))?;
        let listed = m.list_dir(&d);
        put_cached(&ctx, &sh, &snap, m);
        let entries = listed.map_err(|_| {
            ApiError::not_found(format!(
                "share {sh}, snapshot {snap}: no folder {:?}",
                lossy(&d)
            ))
        })?;
        if let [e] = entries.as_slice()
            && e.path == d
        {
            return Err(ApiError::bad(format!(
                "share {sh}, snapshot {snap}: {:?} is a {}, not a folder",
                lossy(&d),
                kind_name(e.kind)
            )));
        }
        Ok((snap, entries))
    })
    .await?;
    let total = entries.len();
    let mut rows: Vec<EntryRow> = entries
        .into_iter()
        .map(|e| EntryRow {
            name: lossy(base_name(&e.path)),
            enc: enc(&e.path),
            kind: kind_name(e.kind),
            size: e.size,
            mtime: e.mtime,
            link: (e.kind == EntryKind::Symlink).then(|| lossy(&e.link)),
        })
        .collect();
    // Folders first, then by name.
    rows.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    rows.truncate(MAX_LISTED);
    let mut crumbs = Vec::new();
    if !dir.is_empty() {
        for (i, c) in dir.iter().enumerate() {
            if *c == b'/' {
                crumbs.push(Crumb {
                    name: lossy(base_name(&dir[..i])),
                    enc: enc(&dir[..i]),
                });
            }
        }
        crumbs.push(Crumb {
            name: lossy(base_name(&dir)),
            enc: enc(&dir),
        });
    }
    Ok(Json(serde_json::json!({
        "share": share,
        "snapshot": snap.to_string(),
        "path": lossy(&dir),
        "enc": enc(&dir),
        "crumbs": crumbs,
        "total": total,
        "entries": rows,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------------
// GET /api/download

/// What the engine's thread sends toward the HTTP response.
enum Piece {
    /// The response can start.
    Head {
        filename: Vec<u8>,
        content_type: &'static str,
        len: Option<u64>,
    },
    Data(Bytes),
    /// Before `Head`: the error answer; after: the stream is cut short.
    Fail(ApiError),
}

/// The tar stream's writer: each write is one chunk on the bounded channel (it blocks while the channel
/// is full; an error once the download was closed).
struct ChannelWriter(SyncSender<Piece>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .send(Piece::Data(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the download was closed"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn get_download(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    download(app, uri).await.into_response()
}

struct DownloadReq {
    ctx: Ctx,
    share: String,
    wanted: Option<String>,
    path: Vec<u8>,
}

async fn download(app: Shared, uri: Uri) -> Answer {
    let q = params(&uri)?;
    let share = share_param(&app, &q)?;
    let req = DownloadReq {
        ctx: Ctx::new(&app)?,
        wanted: text_param(&q, "snapshot")?,
        path: share_rel(&share, q.get("path").map(Vec::as_slice).unwrap_or_default())?,
        share,
    };
    // engine → (4 chunks) → relay thread → (4 chunks) → HTTP body.
    let (stx, srx) = sync_channel::<Piece>(4);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let watch = tx.clone();
    std::thread::Builder::new()
        .name("offsite-download-relay".into())
        .spawn(move || {
            while let Ok(p) = srx.recv() {
                if tx.blocking_send(p).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| ApiError::internal(format!("starting a thread: {e}")))?;
    std::thread::Builder::new()
        .name("offsite-download".into())
        .spawn(move || {
            if let Err(e) = download_thread(req, &stx, watch) {
                let _ = stx.send(Piece::Fail(e));
            }
        })
        .map_err(|e| ApiError::internal(format!("starting a thread: {e}")))?;
    let (filename, content_type, len) = match rx.recv().await {
        Some(Piece::Head {
            filename,
            content_type,
            len,
        }) => (filename, content_type, len),
        Some(Piece::Fail(e)) => return Err(e),
        Some(Piece::Data(_)) | None => return Err(ApiError::internal("the download stopped")),
    };
    let stream = ReceiverStream::new(rx).filter_map(|p| match p {
        Piece::Data(b) => Some(Ok(b)),
        Piece::Fail(e) => Some(Err(io::Error::other(e.message))),
        Piece::Head { .. } => None,
    });
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition(&filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(n) = len
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(r)
}

/// `attachment` with an ASCII-only `filename` (anything else becomes `_`) and, for a UTF-8 name, the
/// exact one as `filename*`.
fn disposition(name: &[u8]) -> String {
    let text = lossy(name);
    let mut ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+,() ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    ascii = ascii.trim_start_matches(['.', ' ']).to_owned();
    if ascii.is_empty() {
        ascii = "download".into();
    }
    let mut v = format!("attachment; filename=\"{ascii}\"");
    if let Ok(s) = std::str::from_utf8(name)
        && s != ascii
    {
        v.push_str("; filename*=UTF-8''");
        v.push_str(&enc_keeping(s.as_bytes(), b"-._~"));
    }
    v
}

/// The download's work on its own thread: find what `path` is, then send a file or a tar.
fn download_thread(
    req: DownloadReq,
    out: &SyncSender<Piece>,
    watch: tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), ApiError> {
    let rt = runtime()?;
    let DownloadReq {
        ctx,
        share,
        wanted,
        path,
    } = req;
    let (snap, mut m) = rt.block_on(open_snapshot(&ctx, &share, wanted.as_deref()))?;
    let found = if path.is_empty() {
        Ok(None)
    } else {
        find_entry(&mut m, &path)
    };
    put_cached(&ctx, &share, &snap, m);
    let what = format!("share {share}, snapshot {snap}: {:?}", lossy(&path));
    let kind = match found? {
        None if path.is_empty() => EntryKind::Dir,
        None => return Err(ApiError::not_found(format!("{what}: not in this snapshot"))),
        Some(e) => e.kind,
    };
    // A closed download (the client went away) stops the engine.
    let until_closed = async move { watch.closed().await };
    match kind {
        EntryKind::Symlink => Err(ApiError::bad(format!(
            "{what}: a symlink, nothing to download (download its folder)"
        ))),
        EntryKind::File => {
            let spool = tempfile::Builder::new()
                .prefix("download-")
                .tempdir_in(ctx.state_dir().join("tmp"))
                .or_else(|_| {
                    std::fs::create_dir_all(ctx.state_dir().join("tmp"))?;
                    tempfile::Builder::new()
                        .prefix("download-")
                        .tempdir_in(ctx.state_dir().join("tmp"))
                })
                .map_err(|e| ApiError::internal(format!("a temporary folder: {e}")))?;
            let to = spool.path().join("f");
            let report = rt.block_on(async {
                tokio::select! {
                    r = run(&ctx, &share, &snap, std::slice::from_ref(&path), Mode::Dir { to: to.clone(), overwrite: false }, Box::new(|_| {})) => r,
                    _ = until_closed => Err(ApiError::internal("the download was closed")),
                }
            })?;
            if let Some(p) = report.problems.first() {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("share {share}, snapshot {snap}: {p}"),
                ));
            }
            let file_path =
                to.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path));
            // Its mode is the snapshot's (perhaps not readable); it only has to be read here.
            let _ = std::fs::set_permissions(
                &file_path,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
            );
            let mut file = std::fs::File::open(&file_path)
                .map_err(|e| ApiError::internal(format!("{what}: {e}")))?;
            // Open: the folder can go now; the data stays readable until the file is closed.
            drop(spool);
            let len = file.metadata().map(|m| m.len()).ok();
            send(
                out,
                Piece::Head {
                    filename: base_name(&path).to_vec(),
                    content_type: "application/octet-stream",
                    len,
                },
            )?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ApiError::internal(format!("{what}: {e}"))),
                };
                send(out, Piece::Data(Bytes::copy_from_slice(&buf[..n])))?;
            }
        }
        EntryKind::Dir => {
            let mut name = if path.is_empty() {
                format!("{share}-{snap}").into_bytes()
            } else {
                base_name(&path).to_vec()
            };
            name.extend_from_slice(b".tar");
            send(
                out,
                Piece::Head {
                    filename: name,
                    content_type: "application/x-tar",
                    len: None,
                },
            )?;
            let writer = io::BufWriter::with_capacity(CHUNK, ChannelWriter(out.clone()));
            let paths = if path.is_empty() {
                Vec::new()
            } else {
                vec![path.clone()]
            };
            let report = rt.block_on(async {
                tokio::select! {
                    r = run(&ctx, &share, &snap, &paths, Mode::Tar(Box::new(writer)), Box::new(|_| {})) => r,
                    _ = until_closed => Err(ApiError::internal("the download was closed")),
                }
            })?;
            if report.problem_count > 0 {
                let list: Vec<String> = report
                    .problems
                    .iter()
                    .take(20)
                    .map(|p| p.to_string())
                    .collect();
                tracing::warn!(
                    "web: download of {what} cut short: {} problems: {}",
                    report.problem_count,
                    list.join("; ")
                );
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{what}: {} files could not be verified",
                        report.problem_count
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn send(out: &SyncSender<Piece>, p: Piece) -> Result<(), ApiError> {
    out.send(p)
        .map_err(|_| ApiError::internal("the download was closed"))
}

/// One engine run against the target (connects, pulls, closes).
async fn run(
    ctx: &Ctx,
    share: &str,
    snap: &SnapshotId,
    paths: &[Vec<u8>],
    mode: Mode,
    events: EventFn,
) -> Result<CheckReport, ApiError> {
    let remote = catalog::connect(&ctx.config.target)
        .await
        .map_err(ApiError::engine)?;
    let r = pull::run_snapshot(
        &remote,
        &ctx.config.target,
        &ctx.keys,
        ctx.state_dir(),
        share,
        snap,
        paths,
        mode,
        pull::BATCH_ENTRIES,
        events,
    )
    .await
    .map_err(ApiError::engine);
    let _ = remote.close().await;
    r
}

// ---------------------------------------------------------------------------------------------------
// POST /api/restore, GET /api/restore/JOB

#[derive(Deserialize)]
struct RestoreBody {
    share: String,
    #[serde(default)]
    snapshot: Option<String>,
    /// Percent-encoded paths relative to the share (the `enc` of `/api/ls`); none: the whole share.
    #[serde(default)]
    paths: Vec<String>,
    /// The folder on the box to restore into (inside a data volume).
    to: String,
    #[serde(default)]
    overwrite: bool,
}

/// A restore job as `GET /api/restore/JOB` shows it.
#[derive(Clone, Serialize)]
struct Job {
    job: String,
    /// `running`, `done` (see `problem_count`) or `failed` (see `error`).
    state: &'static str,
    share: String,
    snapshot: Option<String>,
    to: String,
    overwrite: bool,
    /// Milliseconds since the epoch.
    started: u64,
    finished: Option<u64>,
    files: u64,
    bytes: u64,
    problem_count: u64,
    /// Per file: `path`, `kind` (`missing`, `extra`, `rolled_back`, `swapped`, `tampered`, `changed`,
    /// `exists`, `failed`) and `detail`.
    problems: Vec<FileProblem>,
    /// The engine's report, once done (its problems are the list above).
    report: Option<CheckReport>,
    error: Option<String>,
}

static JOBS: Mutex<VecDeque<Job>> = Mutex::new(VecDeque::new());

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn with_job(id: &str, f: impl FnOnce(&mut Job)) {
    if let Some(j) = lock(&JOBS).iter_mut().find(|j| j.job == id) {
        f(j);
    }
}

fn job_id() -> Result<String, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(format!("randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Where a restore may write: `to` must be an absolute path without `.` or `..`, and once its existing
/// part is resolved (symlinks followed) it must lie inside one of `volumes` (also resolved). Returns the
/// resolved destination (its missing folders are created by the engine, never through a symlink).
fn resolve_destination(volumes: &[PathBuf], to: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(to.trim_end_matches('/'));
    let p = if p.as_os_str().is_empty() {
        Path::new("/")
    } else {
        p
    };
    if !p.is_absolute() {
        return Err(ApiError::bad(format!(
            "restore folder {to:?}: give a full path (starting with /) inside a data volume"
        )));
    }
    if to.split('/').any(|c| c == "." || c == "..") {
        return Err(ApiError::bad(format!(
            "restore folder {to:?}: no `.` or `..` in the path"
        )));
    }
    // The longest part that exists, resolved; the rest are plain names to create below it.
    let mut existing = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::symlink_metadata(&existing) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (existing.file_name(), existing.parent()) {
                    (Some(n), Some(parent)) => {
                        rest.push(n.to_owned());
                        existing = parent.to_path_buf();
                    }
                    _ => {
                        return Err(ApiError::bad(format!("restore folder {to:?}: not found")));
                    }
                }
            }
            Err(e) => return Err(ApiError::bad(format!("restore folder {to:?}: {e}"))),
        }
    }
    let real = std::fs::canonicalize(&existing)
        .map_err(|e| ApiError::bad(format!("restore folder {to:?}: {e}")))?;
    let inside = volumes
        .iter()
        .filter_map(|v| std::fs::canonicalize(v).ok())
        .any(|v| real.starts_with(&v));
    if !inside {
        let shown: Vec<String> = volumes.iter().map(|v| v.display().to_string()).collect();
        let via = if real != existing {
            format!(" ({} leads to {})", existing.display(), real.display())
        } else {
            String::new()
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "restore folder {to:?}: not inside a data volume{via}; restores may only write below {}",
                if shown.is_empty() {
                    "a data volume (none is configured: [web] data_volumes)".to_owned()
                } else {
                    shown.join(", ")
                }
            ),
        ));
    }
    if !real.is_dir() {
        return Err(ApiError::bad(format!(
            "restore folder {to:?}: {} is not a folder",
            real.display()
        )));
    }
    let mut dest = real;
    for c in rest.iter().rev() {
        if matches!(Path::new(c).components().next(), Some(Component::Normal(_))) {
            dest.push(c);
        } else {
            return Err(ApiError::bad(format!(
                "restore folder {to:?}: no `.` or `..` in the path"
            )));
        }
    }
    Ok(dest)
}

async fn post_restore(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    // The session first: the body is only parsed for a logged-in admin.
    if let Err(r) = session_and_csrf(&app, &headers) {
        return r.into_response();
    }
    match serde_json::from_slice::<RestoreBody>(&body) {
        Ok(b) => start_restore(&app, b).into_response(),
        Err(e) => ApiError::bad(format!(
            "a JSON body {{share, snapshot, paths, to, overwrite}} is needed: {e}"
        ))
        .into_response(),
    }
}

fn start_restore(app: &App, b: RestoreBody) -> Answer {
    check_share(app, &b.share)?;
    let mut raw = Vec::with_capacity(b.paths.len());
    for p in &b.paths {
        raw.push(
            unpercent(p.as_bytes(), false)
                .map_err(|e| ApiError::bad(format!("share {}: path {e}", b.share)))?,
        );
    }
    let paths = pull::normalize_paths(&raw)
        .map_err(|e| ApiError::bad(format!("share {}: {e}", b.share)))?;
    let snapshot = b.snapshot.filter(|s| !s.is_empty());
    if let Some(s) = &snapshot
        && SnapshotId::parse(s).is_none()
    {
        return Err(ApiError::bad(format!(
            "snapshot {s:?}: not a snapshot name (YYYY-MM-DDTHHMMSSZ)"
        )));
    }
    let config = app.config();
    let to = resolve_destination(&config.web.data_volumes, &b.to)?;
    let ctx = Ctx::new(app)?;
    let id = job_id()?;
    {
        let mut jobs = lock(&JOBS);
        if let Some(j) = jobs.iter().find(|j| j.state == "running") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a restore is already running (share {}, into {}): wait for it to end",
                    j.share, j.to
                ),
            ));
        }
        while jobs.len() >= KEPT_JOBS {
            jobs.pop_front();
        }
        jobs.push_back(Job {
            job: id.clone(),
            state: "running",
            share: b.share.clone(),
            snapshot: snapshot.clone(),
            to: to.display().to_string(),
            overwrite: b.overwrite,
            started: now_ms(),
            finished: None,
            files: 0,
            bytes: 0,
            problem_count: 0,
            problems: Vec::new(),
            report: None,
            error: None,
        });
    }
    tracing::info!(
        "web: restore {id} of share {} into {} started",
        b.share,
        to.display()
    );
    let job = id.clone();
    let share = b.share;
    let overwrite = b.overwrite;
    let spawned = std::thread::Builder::new()
        .name("offsite-restore-job".into())
        .spawn(move || {
            let outcome = restore_thread(
                &ctx,
                &job,
                &share,
                snapshot.as_deref(),
                &paths,
                to,
                overwrite,
            );
            let finished = now_ms();
            match &outcome {
                Ok(r) => tracing::info!(
                    "web: restore {job} of share {share} ended: {} files, {} problems",
                    r.files_ok,
                    r.problem_count
                ),
                Err(e) => {
                    tracing::warn!("web: restore {job} of share {share} failed: {}", e.message)
                }
            }
            with_job(&job, |j| {
                j.finished = Some(finished);
                match outcome {
                    Ok(mut r) => {
                        j.state = "done";
                        j.snapshot = Some(r.snapshot.clone());
                        j.files = r.files_ok;
                        j.bytes = r.bytes_ok;
                        j.problem_count = r.problem_count;
                        j.problems = std::mem::take(&mut r.problems);
                        j.report = Some(r);
                    }
                    Err(e) => {
                        j.state = "failed";
                        j.error = Some(e.message);
                    }
                }
            });
        });
    if let Err(e) = spawned {
        with_job(&id, |j| {
            j.state = "failed";
            j.error = Some(format!("starting a thread: {e}"));
        });
        return Err(ApiError::internal(format!("starting a thread: {e}")));
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "job": id }))).into_response())
}

fn restore_thread(
    ctx: &Ctx,
    job: &str,
    share: &str,
    wanted: Option<&str>,
    paths: &[Vec<u8>],
    to: PathBuf,
    overwrite: bool,
) -> Result<CheckReport, ApiError> {
    let rt = runtime()?;
    rt.block_on(async {
        let remote = catalog::connect(&ctx.config.target)
            .await
            .map_err(ApiError::engine)?;
        let r = async {
            let on = catalog::snapshots(&remote, &ctx.config.target, share)
                .await
                .map_err(ApiError::engine)?;
            let snap = catalog::choose_snapshot(&on, share, wanted)
                .map_err(|e| ApiError::not_found(e.to_string()))?;
            let id = job.to_owned();
            with_job(&id, |j| j.snapshot = Some(snap.to_string()));
            let events: EventFn = Box::new(move |ev: CheckEvent<'_>| match ev {
                CheckEvent::FileOk { bytes, .. } => with_job(&id, |j| {
                    j.files += 1;
                    j.bytes += bytes;
                }),
                CheckEvent::Problem(p) => with_job(&id, |j| {
                    j.problem_count += 1;
                    if j.problems.len() < backup::restore::problem::MAX_KEPT_PROBLEMS {
                        j.problems.push(p.clone());
                    }
                }),
            });
            pull::run_snapshot(
                &remote,
                &ctx.config.target,
                &ctx.keys,
                ctx.state_dir(),
                share,
                &snap,
                paths,
                Mode::Dir { to, overwrite },
                pull::BATCH_ENTRIES,
                events,
            )
            .await
            .map_err(ApiError::engine)
        }
        .await;
        let _ = remote.close().await;
        r
    })
}

async fn get_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Err(r) = session(&app, &headers) {
        return r.into_response();
    }
    match lock(&JOBS).iter().find(|j| j.job == id) {
        Some(j) => Json(j.clone()).into_response(),
        None => ApiError::not_found(format!(
            "restore job {id:?}: unknown (only the last {KEPT_JOBS} are kept)"
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_percent_encoded() {
        for b in [
            b"a b/c%d\xff\xfe\n+x".as_slice(),
            b"plain/x.txt",
            b"\xc3\x9cber".as_slice(),
        ] {
            let e = enc(b);
            assert!(
                e.is_ascii() && !e.contains(['&', '=', '+', ' ', '#']),
                "{e}"
            );
            assert_eq!(unpercent(e.as_bytes(), true).unwrap(), b);
            assert_eq!(unpercent(e.as_bytes(), false).unwrap(), b);
        }
        assert_eq!(unpercent(b"a+b", true).unwrap(), b"a b");
        assert_eq!(unpercent(b"a+b", false).unwrap(), b"a+b");
        for bad in [b"%zz".as_slice(), b"%4", b"x%"] {
            assert!(unpercent(bad, false).is_err());
        }
    }

    #[test]
    fn download_names_are_safe_in_the_header() {
        let d = disposition(b"r\xc3\xa9sum\xc3\xa9 \"x\";\r\n.pdf");
        assert!(
            d.starts_with("attachment; filename=\"r_sum_ _x____.pdf\""),
            "{d}"
        );
        assert!(
            d.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22%3B%0D%0A.pdf"),
            "{d}"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
        assert_eq!(disposition(b"\xff.tar"), "attachment; filename=\"_.tar\"");
        assert!(disposition(b"...").starts_with("attachment; filename=\"download\""));
    }

    #[test]
    fn destinations_stay_inside_the_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(vol.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("escape")).unwrap();
        std::os::unix::fs::symlink(vol.join("a"), dir.path().join("into-vol")).unwrap();
        std::fs::write(vol.join("file"), b"x").unwrap();
        let vols = [vol.clone()];
        let real = std::fs::canonicalize(&vol).unwrap();
        let to = |p: &Path| p.to_str().unwrap().to_owned();
        assert_eq!(
            resolve_destination(&vols, &to(&vol.join("a/new/deeper"))).unwrap(),
            real.join("a/new/deeper")
        );
        assert_eq!(resolve_destination(&vols, &to(&vol)).unwrap(), real);
        // A symlink from outside into a volume is fine: the resolved place is inside.
        assert_eq!(
            resolve_destination(&vols, &to(&dir.path().join("into-vol/x"))).unwrap(),
            real.join("a/x")
        );
        for (p, code) in [
            (to(&outside), StatusCode::FORBIDDEN),
            (to(&vol.join("escape")), StatusCode::FORBIDDEN),
            (to(&vol.join("escape/x/y")), StatusCode::FORBIDDEN),
            (format!("{}/../outside", to(&vol)), StatusCode::BAD_REQUEST),
            (format!("{}/./a", to(&vol)), StatusCode::BAD_REQUEST),
            ("vol/a".to_owned(), StatusCode::BAD_REQUEST),
            (to(&vol.join("file")), StatusCode::BAD_REQUEST),
            (to(&vol.join("file/x")), StatusCode::BAD_REQUEST),
        ] {
            let e = resolve_destination(&vols, &p).unwrap_err();
            assert_eq!(e.code, code, "{p}: {}", e.message);
            assert!(e.message.contains("restore folder"), "{}", e.message);
        }
        assert_eq!(
            resolve_destination(&[], &to(&vol)).unwrap_err().code,
            StatusCode::FORBIDDEN
        );
    }
}
