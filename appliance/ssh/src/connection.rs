//! Connecting, host-key verification, authentication, and the connection handle.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, DisconnectReason};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Disconnect, Preferred};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::error::{Result, SshError};
use crate::keys::load_identity;
use crate::known_hosts::{self, HostKeyInfo, HostKeyStatus, fingerprint, key_type};
use crate::process::{DEFAULT_STDERR_LIMIT, ProcCtx, RemoteProcess};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (22 by default).
    pub port: u16,
    /// Remote user name.
    pub user: String,
    /// OpenSSH private key file (ed25519 or RSA; ECDSA also works).
    pub identity_file: PathBuf,
    /// Passphrase of `identity_file`, if it is encrypted.
    pub identity_passphrase: Option<String>,
    /// OpenSSH known_hosts file the server's host key is checked against.
    pub known_hosts_file: PathBuf,
    /// Limit for TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Send a keepalive when nothing was received for this long; after
    /// [`keepalive_max`](Self::keepalive_max) unanswered ones the connection is dropped.
    /// `None` disables keepalives.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives tolerated before the peer is declared dead.
    pub keepalive_max: usize,
    /// Drop the connection when nothing at all happens on it (no traffic either way) for this
    /// long. With keepalives on, an answering server keeps the connection alive.
    pub inactivity_timeout: Option<Duration>,
    /// Bytes of each command's stderr that are kept (the last ones).
    pub stderr_limit: usize,
}

impl SshTarget {
    /// A target with the defaults: port 22, 20 s connect timeout, keepalive every 15 s
    /// (dead after 4 unanswered, i.e. about a minute), no inactivity timeout, 64 KiB stderr.
    pub fn new(
        host: impl Into<String>,
        user: impl Into<String>,
        identity_file: impl Into<PathBuf>,
        known_hosts_file: impl Into<PathBuf>,
    ) -> Self {
        SshTarget {
            host: host.into(),
            port: 22,
            user: user.into(),
            identity_file: identity_file.into(),
            identity_passphrase: None,
            known_hosts_file: known_hosts_file.into(),
            connect_timeout: Duration::from_secs(20),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            inactivity_timeout: None,
            stderr_limit: DEFAULT_STDERR_LIMIT,
        }
    }

    /// Set the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// `host:port`, as used in error messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shared between the connection, its processes and the russh handler.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    reason: Mutex<Option<String>>,
}

impl ConnState {
    fn set_reason(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
    }

    pub(crate) fn disconnect_reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "connection closed".to_string())
    }
}

#[derive(Debug)]
enum HandlerError {
    Russh(russh::Error),
    Refused(Box<SshError>),
    Probed,
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

enum Mode {
    Verify { known_hosts: PathBuf },
    Probe,
}

struct Handler {
    host: String,
    port: u16,
    mode: Mode,
    state: Arc<ConnState>,
    server_key: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Handler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                tracing::debug!("server presented a host certificate; not supported");
                return Ok(false);
            }
        };
        *self.server_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        let known_hosts = match &self.mode {
            Mode::Probe => return Err(HandlerError::Probed),
            Mode::Verify { known_hosts } => known_hosts,
        };
        let status = known_hosts::check_known_hosts(known_hosts, &self.host, self.port, key)
            .map_err(|e| HandlerError::Refused(Box::new(e)))?;
        tracing::debug!(host = %self.host, port = self.port, fingerprint = %fingerprint(key), ?status, "host key check");
        let info = Box::new(HostKeyInfo::new(&self.host, self.port, key));
        let known_hosts = known_hosts.clone();
        let err = match status {
            HostKeyStatus::Trusted { .. } => return Ok(true),
            HostKeyStatus::Unknown { .. } => SshError::UnknownHostKey { info, known_hosts },
            HostKeyStatus::Changed {
                line,
                expected_fingerprint,
            } => SshError::HostKeyChanged {
                info,
                known_hosts,
                line,
                expected_fingerprint,
            },
            HostKeyStatus::Revoked { line } => SshError::HostKeyRevoked {
                info,
                known_hosts,
                line,
            },
        };
        Err(HandlerError::Refused(Box::new(err)))
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                self.state.set_reason(format!(
                    "server disconnected: {:?} {}",
                    info.reason_code, info.message
                ));
                Ok(())
            }
            DisconnectReason::Error(e) => {
                let text = match &e {
                    HandlerError::Russh(russh::Error::KeepaliveTimeout) => {
                        "server stopped answering keepalives".to_string()
                    }
                    HandlerError::Russh(russh::Error::InactivityTimeout) => {
                        "inactivity timeout".to_string()
                    }
                    HandlerError::Russh(e) => e.to_string(),
                    HandlerError::Refused(e) => e.to_string(),
                    HandlerError::Probed => "host key probe done".to_string(),
                };
                tracing::debug!(reason = %text, "SSH connection ended");
                self.state.set_reason(text);
                Err(e)
            }
        }
    }
}

fn map_handler_err(addr: &str, action: &'static str, e: HandlerError) -> SshError {
    match e {
        HandlerError::Refused(e) => *e,
        HandlerError::Russh(russh::Error::IO(source)) => SshError::Io {
            addr: addr.to_string(),
            action,
            source,
        },
        HandlerError::Russh(source) => SshError::Protocol {
            addr: addr.to_string(),
            action,
            source,
        },
        HandlerError::Probed => SshError::Protocol {
            addr: addr.to_string(),
            action,
            source: russh::Error::UnknownKey,
        },
    }
}

fn protocol<'a>(addr: &'a str, action: &'static str) -> impl FnOnce(russh::Error) -> SshError + 'a {
    move |source| match source {
        russh::Error::IO(source) => SshError::Io {
            addr: addr.to_string(),
            action,
            source,
        },
        source => SshError::Protocol {
            addr: addr.to_string(),
            action,
            source,
        },
    }
}

/// Whether this CPU has AES and carry-less multiply instructions, which AES-GCM needs to be fast.
fn cpu_has_aes_gcm() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The ciphers to offer, best first. russh (like OpenSSH) puts ChaCha20-Poly1305 first, the right choice
/// on the armv7 boxes without AES instructions. Where the CPU has them, AES-256-GCM costs a fraction of
/// ChaCha20-Poly1305's CPU, and every byte of a backup or a restore goes through it.
fn cipher_order(hw_aes_gcm: bool) -> Vec<russh::cipher::Name> {
    let defaults = Preferred::default().cipher.into_owned();
    if !hw_aes_gcm {
        return defaults;
    }
    let gcm = russh::cipher::AES_256_GCM;
    let mut order = vec![gcm];
    order.extend(defaults.into_iter().filter(|c| *c != gcm));
    order
}

fn client_config(target: &SshTarget, known_types: &[String]) -> client::Config {
    let mut preferred = Preferred {
        cipher: cipher_order(cpu_has_aes_gcm()).into(),
        ..Preferred::default()
    };
    if !known_types.is_empty() {
        // Like OpenSSH: ask for the host key types we already know for this host first, so a
        // host known only by its RSA key is not reported unknown because it also has ed25519.
        let known = |a: &Algorithm| {
            let rsa = matches!(a, Algorithm::Rsa { .. });
            let name = a.as_str();
            known_types
                .iter()
                .any(|t| t == name || (rsa && t == "ssh-rsa"))
        };
        let mut keys: Vec<Algorithm> = preferred.key.iter().filter(|a| known(a)).cloned().collect();
        keys.extend(preferred.key.iter().filter(|a| !known(a)).cloned());
        preferred.key = keys.into();
    }
    client::Config {
        preferred,
        keepalive_interval: target.keepalive_interval,
        keepalive_max: target.keepalive_max,
        inactivity_timeout: target.inactivity_timeout,
        nodelay: true,
        ..Default::default()
    }
}

/// Bytes read from the socket at a time.
const SOCKET_READ_BUF: usize = 64 * 1024;

/// The TCP connection to `target`, read through a buffer. russh reads each SSH packet with two
/// `read_exact` calls straight from the stream it is given (the first cipher block, then the rest), so a
/// bare socket costs two `recv` system calls a packet or more, and a third that finds nothing when the
/// packets run out. Through the buffer one `recv` takes all the packets that have arrived: a backup
/// session of one batch went from 35 `recv` calls to 9 (BENCHMARKS.md, seventeenth session). Writes go
/// to the socket as they are (`BufReader` passes them through).
async fn open_socket(
    target: &SshTarget,
    config: &client::Config,
) -> std::io::Result<BufReader<TcpStream>> {
    let socket = TcpStream::connect((target.host.as_str(), target.port)).await?;
    socket.set_nodelay(config.nodelay)?;
    Ok(BufReader::with_capacity(SOCKET_READ_BUF, socket))
}

/// Connect, verify the host key against `target.known_hosts_file`, and authenticate with
/// `target.identity_file`.
pub async fn connect(target: &SshTarget) -> Result<SshConnection> {
    let addr = target.addr();
    let key = Arc::new(load_identity(
        &target.identity_file,
        target.identity_passphrase.as_deref(),
    )?);
    let known_types =
        known_hosts::known_key_types(&target.known_hosts_file, &target.host, target.port)?;
    let config = Arc::new(client_config(target, &known_types));
    let state = Arc::new(ConnState::default());
    let server_key = Arc::new(Mutex::new(None));
    let handler = Handler {
        host: target.host.clone(),
        port: target.port,
        mode: Mode::Verify {
            known_hosts: target.known_hosts_file.clone(),
        },
        state: state.clone(),
        server_key: server_key.clone(),
    };
    tracing::debug!(%addr, user = %target.user, "connecting");
    let work = async {
        let socket = open_socket(target, &config)
            .await
            .map_err(|source| SshError::Io {
                addr: addr.clone(),
                action: "connecting",
                source,
            })?;
        let mut handle = client::connect_stream(config, socket, handler)
            .await
            .map_err(|e| map_handler_err(&addr, "connecting", e))?;
        let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(protocol(&addr, "negotiating the RSA signature hash"))?
                .flatten()
        } else {
            None
        };
        let result = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(key.clone(), hash),
            )
            .await
            .map_err(protocol(&addr, "authenticating"))?;
        if let client::AuthResult::Failure {
            remaining_methods, ..
        } = result
        {
            // russh reports a connection lost during authentication as a refusal that offers
            // nothing; say what happened instead.
            if remaining_methods.is_empty() && handle.is_closed() {
                return Err(protocol(&addr, "authenticating")(russh::Error::Disconnect));
            }
            let _ = handle
                .disconnect(Disconnect::ByApplication, "authentication failed", "")
                .await;
            return Err(SshError::AuthFailed {
                addr: addr.clone(),
                user: target.user.clone(),
                key_type: key.algorithm().as_str().to_string(),
                fingerprint: fingerprint(key.public_key()),
                remaining: remaining_methods
                    .iter()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        Ok(handle)
    };
    let handle = tokio::time::timeout(target.connect_timeout, work)
        .await
        .map_err(|_| SshError::ConnectTimeout {
            addr: addr.clone(),
            secs: target.connect_timeout.as_secs_f64(),
        })??;
    let server_key = server_key
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(|k| HostKeyInfo::new(&target.host, target.port, &k));
    let Some(host_key) = server_key else {
        return Err(SshError::Protocol {
            addr,
            action: "connecting",
            source: russh::Error::UnknownKey,
        });
    };
    tracing::debug!(%addr, "connected and authenticated");
    Ok(SshConnection {
        handle,
        addr,
        state,
        stderr_limit: target.stderr_limit,
        host_key,
        request_timeout: target.connect_timeout,
    })
}

/// The host key `target` presents and where it stands in `target.known_hosts_file`, without
/// authenticating (nothing but the key exchange happens; the identity file is not read). For
/// a "test connection / trust this host" dialog; trust with
/// [`append_known_host`](crate::append_known_host) (or the returned `known_hosts_line`).
pub async fn fetch_host_key(target: &SshTarget) -> Result<(HostKeyInfo, HostKeyStatus)> {
    let addr = target.addr();
    let known_types =
        known_hosts::known_key_types(&target.known_hosts_file, &target.host, target.port)?;
    let config = Arc::new(client_config(target, &known_types));
    let server_key = Arc::new(Mutex::new(None));
    let handler = Handler {
        host: target.host.clone(),
        port: target.port,
        mode: Mode::Probe,
        state: Arc::new(ConnState::default()),
        server_key: server_key.clone(),
    };
    let work = client::connect(config, (target.host.as_str(), target.port), handler);
    let outcome = tokio::time::timeout(target.connect_timeout, work)
        .await
        .map_err(|_| SshError::ConnectTimeout {
            addr: addr.clone(),
            secs: target.connect_timeout.as_secs_f64(),
        })?;
    let key = server_key.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (key, outcome) {
        (Some(key), _) => {
            let status = known_hosts::check_known_hosts(
                &target.known_hosts_file,
                &target.host,
                target.port,
                &key,
            )?;
            tracing::debug!(%addr, key_type = %key_type(&key), ?status, "fetched host key");
            Ok((HostKeyInfo::new(&target.host, target.port, &key), status))
        }
        (None, Err(e)) => Err(map_handler_err(&addr, "fetching the host key", e)),
        (None, Ok(_)) => Err(SshError::Protocol {
            addr,
            action: "fetching the host key",
            source: russh::Error::UnknownKey,
        }),
    }
}

/// An authenticated SSH connection. Commands are run with [`exec`](Self::exec); several may
/// run at once. Dropping it ends the connection once its running processes are dropped too;
/// [`close`](Self::close) ends it cleanly.
pub struct SshConnection {
    handle: client::Handle<Handler>,
    addr: String,
    state: Arc<ConnState>,
    stderr_limit: usize,
    host_key: HostKeyInfo,
    /// How long the server may take to open a channel or start a command (the connect timeout).
    request_timeout: Duration,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("addr", &self.addr)
            .field("host_key", &self.host_key.fingerprint)
            .finish()
    }
}

impl SshConnection {
    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's (verified) host key.
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.host_key
    }

    /// Whether the connection has ended (peer gone, keepalive or inactivity timeout, closed).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Why the connection ended, if it did.
    pub fn disconnect_reason(&self) -> Option<String> {
        self.is_closed().then(|| self.state.disconnect_reason())
    }

    /// Run `command` on the server (through the user's shell, as `ssh host command` does: quote
    /// arguments yourself). Returns once the server accepted the request.
    pub async fn exec(&self, command: &str) -> Result<RemoteProcess> {
        tracing::debug!(addr = %self.addr, %command, "exec");
        // A server that answers keepalives but never confirms the channel or the command would
        // otherwise hold the caller for ever: both answers are bounded by the connect timeout.
        let timed_out = |action| SshError::RequestTimeout {
            addr: self.addr.clone(),
            action,
            secs: self.request_timeout.as_secs_f64(),
        };
        let channel =
            tokio::time::timeout(self.request_timeout, self.handle.channel_open_session())
                .await
                .map_err(|_| timed_out("opening a session channel"))?
                .map_err(protocol(&self.addr, "opening a session channel"))?;
        let (read, write) = channel.split();
        write
            .exec(true, command)
            .await
            .map_err(protocol(&self.addr, "sending the exec request"))?;
        tokio::time::timeout(
            self.request_timeout,
            RemoteProcess::start(
                read,
                write,
                ProcCtx {
                    addr: self.addr.clone(),
                    command: command.to_string(),
                    conn: self.state.clone(),
                },
                self.stderr_limit,
            ),
        )
        .await
        .map_err(|_| timed_out("starting the remote command"))?
    }

    /// Disconnect cleanly and wait (up to 5 s) for the connection to wind down. Running
    /// processes lose their connection.
    pub async fn close(self) -> Result<()> {
        tracing::debug!(addr = %self.addr, "disconnecting");
        self.state.set_reason("closed by the client".to_string());
        if self.handle.is_closed() {
            return Ok(());
        }
        self.handle
            .disconnect(Disconnect::ByApplication, "bye", "")
            .await
            .map_err(protocol(&self.addr, "disconnecting"))?;
        let addr = self.addr.clone();
        match tokio::time::timeout(Duration::from_secs(5), self.handle).await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => match e {
                // The session ends with an error once we said goodbye; that is expected.
                HandlerError::Russh(_) => Ok(()),
                e => Err(map_handler_err(&addr, "disconnecting", e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_goes_first_only_with_hardware_aes() {
        let gcm = russh::cipher::AES_256_GCM;
        let without = cipher_order(false);
        assert_eq!(without, Preferred::default().cipher.into_owned());
        assert_ne!(without[0], gcm);
        let with = cipher_order(true);
        assert_eq!(with[0], gcm);
        assert_eq!(with.len(), without.len(), "the same ciphers, reordered");
        assert!(without.iter().all(|c| with.contains(c)));
    }
}
