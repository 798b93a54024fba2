//! `web` (package `offsite-web`): the admin page of `offsite serve`. HTTPS only (rustls, a self-signed
//! certificate made on first start), one admin (Argon2id password, first set with a setup code printed on
//! the console), sessions in `Secure; HttpOnly; SameSite=Strict` cookies, a CSRF token on every
//! state-changing request, failed logins slowed. The page itself is plain HTML, CSS and a little
//! JavaScript from `web-ui/`, compiled into the binary (no build step).
//!
//! * [`tls`] — the certificate
//! * [`auth`] — password, sessions, CSRF, login brake
//! * [`api`] — routes and the status the page shows
//!
//! The server is hyper's HTTP/1.1 over tokio-rustls, one task per connection, at most
//! [`MAX_CONNECTIONS`] at a time and [`guard::MAX_CONNECTIONS_PER_ADDRESS`] from one client; a TLS
//! handshake must finish within ten seconds, request headers within thirty, and neither a request body
//! nor a response may stall (see [`guard`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub mod api;
pub mod auth;
mod bundle_api;
pub mod guard;
mod notify_api;
mod restore_api;
mod settings;
pub mod tls;

pub use api::{App, Status};
pub use bundle_api::BUNDLE_FILE;

/// Connections served at once (a NAS admin page has one user).
pub const MAX_CONNECTIONS: usize = 64;

/// Where and how to listen.
pub struct WebOptions {
    pub listen: SocketAddr,
    /// `<state_dir>`: the certificate and the admin file go to `<state_dir>/web/`, reports are read from
    /// `<state_dir>/reports/`.
    pub state_dir: PathBuf,
    /// Names and addresses for the certificate.
    pub names: Vec<String>,
    /// The passphrase of the key file, when it is wrapped (restores need the key).
    pub passphrase: Option<Vec<u8>>,
}

/// A running page.
pub struct Started {
    pub addr: SocketAddr,
    pub fingerprint: String,
    /// The code to set the first password with (`None` once it is set).
    pub setup_code: Option<String>,
    pub task: tokio::task::JoinHandle<()>,
    /// The page's state (the USB watcher stages bundles in it).
    pub app: Arc<App>,
}

/// The address of this box on its LAN: the source address the kernel picks for a route to the outside
/// (no packet is sent). `None` without a default route.
pub fn lan_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Starts the page on the current runtime.
pub async fn start(opts: WebOptions, service: service::Handle) -> Result<Started, String> {
    let web_dir = opts.state_dir.join("web");
    let mut names = opts.names.clone();
    names.push(opts.listen.ip().to_string());
    let tls = tls::load_or_create(&web_dir, &names)?;
    let auth = auth::Auth::open(&web_dir)?;
    let setup_code = auth.setup_code().map(str::to_owned);
    let mut status = Status::default();
    for e in service.next_runs() {
        status.apply(&e);
    }
    let app = Arc::new(App {
        auth,
        service: service.clone(),
        state_dir: opts.state_dir.clone(),
        status: Mutex::new(status),
        passphrase: opts.passphrase.clone(),
        log: Mutex::new(std::collections::VecDeque::new()),
        remote_space: Mutex::new(api::RemoteSpace::default()),
        staged: Mutex::new(None),
    });
    // The status follows the service's events.
    let mut events = service.subscribe();
    let weak = Arc::downgrade(&app);
    let tz = jiff::tz::TimeZone::system();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Some(e) => match weak.upgrade() {
                    Some(app) => {
                        app.status
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .apply(&e);
                        if matches!(e, service::Event::RunFinished { .. }) {
                            // A run changes what is free on the target: ask again when next shown.
                            app.remote_space
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .checked = None;
                        }
                        if let Some(line) = e.describe(&tz) {
                            app.log_line(line);
                        }
                    }
                    None => return,
                },
                None => return,
            }
        }
    });
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", opts.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listening on {}: {e}", opts.listen))?;
    let task = tokio::spawn(serve(listener, TlsAcceptor::from(tls.config), app.clone()));
    Ok(Started {
        addr,
        fingerprint: tls.fingerprint,
        setup_code,
        task,
        app,
    })
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, app: Arc<App>) {
    let router = api::router(app)
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_BODY))
        .layer(axum::middleware::from_fn(guard::body_deadline));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let addresses = guard::Addresses::default();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("web: accept: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(held) = addresses.admit(peer.ip()) else {
            // Closed at once: that address holds its share of the slots already.
            tracing::debug!("web: {} holds too many connections; refused one", peer.ip());
            continue;
        };
        let acceptor = acceptor.clone();
        let svc = router
            .clone()
            .layer(axum::Extension(api::ClientIp(peer.ip())));
        tokio::spawn(async move {
            let _permit = permit;
            let _held = held;
            let tcp = guard::WriteDeadline::new(tcp, guard::WRITE_STALL);
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
