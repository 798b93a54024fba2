//! The channels against real peers on 127.0.0.1: an HTTPS webhook receiver with a self-signed certificate
//! (tokio-rustls), one that hangs, one that says no; and Python's `aiosmtpd` as the mail server, with
//! implicit TLS and with STARTTLS, AUTH required.
//!
//! The SMTP tests need a Python with `aiosmtpd`: `tests/run` exports `OFFSITE_TEST_PYTHON` (its venv).
//! Without it they are skipped with a message — except under `CI`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup::config::{NotifyConfig, SmtpConfig, SmtpTls};
use notify::{Message, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Cert {
    pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn cert() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    Cert {
        pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

fn failed_message() -> Message {
    let report = serde_json::json!({
        "started": "2026-05-01T01:30:00Z",
        "error": null,
        "shares": [{"share": "photos", "status": "failed", "error": "target gone",
                    "counters": {"files": 0, "bytes": 0, "failed": 0},
                    "skipped": [{"path": "private/diary.txt", "reason": "x"}]}]
    });
    Message::for_run("nas1", "*", "failed", Some("target gone"), Some(&report))
}

/// Reads one HTTP request (head and `content-length` body) from `s`.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < len {
                let n = s.read(&mut chunk).await.expect("read");
                assert!(n > 0);
                body.extend_from_slice(&chunk[..n]);
            }
            return (head, body);
        }
    }
}

/// An HTTPS server that answers one request with `status`; returns its port and the request.
async fn https_once(
    cert: &Cert,
    status: &'static str,
) -> (u16, tokio::task::JoinHandle<(String, Vec<u8>)>) {
    use rustls::pki_types::pem::PemObject;
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // A client that refuses our certificate ends the handshake.
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            return (String::new(), Vec::new());
        };
        let (head, body) = read_request(&mut tls).await;
        let answer =
            format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno");
        tls.write_all(answer.as_bytes()).await.expect("write");
        let _ = tls.shutdown().await;
        (head, body)
    });
    (port, task)
}

fn hook(url: String) -> NotifyConfig {
    NotifyConfig {
        on_success: false,
        webhook: Some(url),
        smtp: None,
    }
}

#[tokio::test]
async fn webhook_over_https_gets_the_json_at_the_root_with_the_topic() {
    let c = cert();
    let (port, server) = https_once(&c, "200 OK").await;
    let opts = Options {
        extra_roots: vec![c.der.clone()],
        ..Options::default()
    };
    let m = failed_message();
    notify::send_with(
        &hook(format!("https://127.0.0.1:{port}/?auth=TOKEN#backups")),
        &m,
        &opts,
    )
    .await
    .expect("sent");
    let (head, body) = server.await.expect("server");
    assert!(head.starts_with("POST /?auth=TOKEN HTTP/1.1"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["topic"], "backups");
    assert_eq!(v["title"], "offsite on nas1: backup FAILED");
    assert_eq!(v["priority"], 5);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|t| t.contains("photos: failed"))
    );
    assert!(
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("*offsite"))
    );
    assert_eq!(v["offsite"]["shares"][0]["share"], "photos");
    // Counts, never the names of files.
    assert!(!String::from_utf8_lossy(&body).contains("diary"));
}

#[tokio::test]
async fn webhook_https_is_verified_and_errors_name_the_host_not_the_token() {
    let c = cert();
    let (port, _server) = https_once(&c, "200 OK").await;
    // The self-signed certificate is not trusted without the test's extra root.
    let e = notify::send(
        &hook(format!("https://127.0.0.1:{port}/message?token=SECRET")),
        &failed_message(),
    )
    .await
    .expect_err("an untrusted certificate must fail");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("webhook https://127.0.0.1:{port}: TLS")),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");

    // A service that says no: its status is in the error.
    let (port, _server) = https_once(&c, "401 Unauthorized").await;
    let opts = Options {
        extra_roots: vec![c.der.clone()],
        ..Options::default()
    };
    let e = notify::send_with(
        &hook(format!("https://127.0.0.1:{port}/message?token=SECRET")),
        &failed_message(),
        &opts,
    )
    .await
    .expect_err("401");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");

    // No channel at all.
    let e = notify::send(&NotifyConfig::default(), &failed_message())
        .await
        .expect_err("nothing configured");
    assert!(e.failures.is_empty());
}

#[tokio::test]
async fn a_webhook_that_hangs_is_given_up_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts, reads, never answers.
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let opts = Options {
        timeout: Duration::from_millis(500),
        ..Options::default()
    };
    let t = Instant::now();
    let e = notify::send_with(
        &hook(format!("http://127.0.0.1:{port}/hook")),
        &failed_message(),
        &opts,
    )
    .await
    .expect_err("timeout");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.to_string().contains("no answer within"), "{e}");
}

// ---------------------------------------------------------------------------------------------------
// SMTP against aiosmtpd.

const SMTP_SERVER: &str = r#"
import json, socket, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, cert, key, out, portfile = sys.argv[1:6]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({
                "authenticated": bool(session.authenticated),
                "login": session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
                # (aiosmtpd sets session.ssl for STARTTLS only; the transport knows either way)
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"nas" and auth_data.password == b"s3cret pw"
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
common = dict(hostname="127.0.0.1", port=port, authenticator=authenticator, auth_required=True)
if mode == "implicit":
    # TLS from the first byte; aiosmtpd's auth_require_tls only knows STARTTLS, hence False (it warns).
    c = Controller(Handler(), ssl_context=ctx, auth_require_tls=False, **common)
else:
    c = Controller(Handler(), tls_context=ctx, require_starttls=True, auth_require_tls=True, **common)
c.start()
with open(portfile + ".tmp", "w") as f:
    f.write(str(port))
import os
os.rename(portfile + ".tmp", portfile)
try:
    while True:
        time.sleep(3600)
finally:
    c.stop()
"#;

/// The Python with aiosmtpd, or `None` (skip) outside CI.
fn python() -> Option<PathBuf> {
    match std::env::var_os("OFFSITE_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("OFFSITE_TEST_PYTHON is not set (tests/run sets it to its venv with aiosmtpd)")
        }
        None => {
            eprintln!(
                "skipped: OFFSITE_TEST_PYTHON is not set (run tests/run, or point it at a Python with aiosmtpd)"
            );
            None
        }
    }
}

struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
    ca: PathBuf,
    password_file: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp(python: &Path, dir: &Path, mode: &str) -> Smtp {
    let c = cert();
    let script = dir.join("smtpd.py");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&script, SMTP_SERVER).expect("script");
    std::fs::write(&cert_file, &c.pem).expect("cert");
    std::fs::write(&key_file, &c.key_pem).expect("key");
    let out = dir.join(format!("{mode}.jsonl"));
    let portfile = dir.join(format!("{mode}.port"));
    let password_file = dir.join("smtp-password");
    std::fs::write(&password_file, "s3cret pw\n").expect("password");
    let child = Command::new(python)
        .arg(&script)
        .args([mode])
        .args([&cert_file, &key_file, &out, &portfile])
        .stdout(Stdio::null())
        .spawn()
        .expect("python");
    let mut srv = Smtp {
        child,
        port: 0,
        out,
        ca: cert_file,
        password_file,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.port == 0 {
        if let Ok(p) = std::fs::read_to_string(&portfile) {
            srv.port = p.trim().parse().expect("port");
        }
        if let Ok(Some(status)) = srv.child.try_wait() {
            panic!("the SMTP server ended: {status}");
        }
        assert!(Instant::now() < deadline, "the SMTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    srv
}

fn smtp_config(srv: &Smtp, tls: SmtpTls) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(srv.port),
        tls,
        user: Some("nas".into()),
        password_file: Some(srv.password_file.clone()),
        from: "NAS <nas@example.org>".into(),
        to: vec!["owner@example.org".into()],
        ca_file: Some(srv.ca.clone()),
    }
}

fn received(srv: &Smtp) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&srv.out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

async fn smtp_case(mode: &str, tls: SmtpTls) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_smtp(&python, dir.path(), mode);
    let mut smtp = smtp_config(&srv, tls);
    let config = NotifyConfig {
        on_success: false,
        webhook: None,
        smtp: Some(smtp.clone()),
    };
    notify::send(&config, &failed_message())
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    let mails = received(&srv);
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert_eq!(m["authenticated"], true, "{m}");
    assert_eq!(m["login"], "nas", "{m}");
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["from"], "nas@example.org");
    assert_eq!(m["to"][0], "owner@example.org");
    let data = m["data"].as_str().unwrap_or_default();
    assert!(
        data.contains("Subject: offsite on nas1: backup FAILED"),
        "{data}"
    );
    assert!(data.contains("photos: failed: target gone"), "{data}");
    assert!(!data.contains("diary"), "{data}");

    // A wrong password: refused, and the error names the host but holds no password.
    std::fs::write(&srv.password_file, "wrong horse\n").expect("password");
    let e = notify::send(&config, &failed_message())
        .await
        .expect_err("a wrong password must fail");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("smtp 127.0.0.1:{}: ", srv.port)),
        "{text}"
    );
    assert!(
        !text.contains("wrong horse") && !text.contains("s3cret"),
        "{text}"
    );

    // Without the CA file the self-signed certificate is not trusted: nothing is sent.
    std::fs::write(&srv.password_file, "s3cret pw\n").expect("password");
    smtp.ca_file = None;
    let config = NotifyConfig {
        smtp: Some(smtp),
        ..config
    };
    let e = notify::send(&config, &failed_message())
        .await
        .expect_err("an untrusted certificate must fail");
    assert!(e.to_string().contains("smtp 127.0.0.1"), "{e}");
    assert_eq!(received(&srv).len(), 1);
}

#[tokio::test]
async fn smtp_with_implicit_tls_and_auth() {
    smtp_case("implicit", SmtpTls::Implicit).await;
}

#[tokio::test]
async fn smtp_with_starttls_and_auth() {
    smtp_case("starttls", SmtpTls::Starttls).await;
}

#[tokio::test]
async fn both_channels_are_tried_and_only_the_failed_one_is_named() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_smtp(&python, dir.path(), "starttls");
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = NotifyConfig {
        on_success: true,
        webhook: Some(format!("http://127.0.0.1:{closed}/hook")),
        smtp: Some(smtp_config(&srv, SmtpTls::Starttls)),
    };
    let e = notify::send(&config, &Message::test("nas1"))
        .await
        .expect_err("the webhook fails");
    assert_eq!(e.failures.len(), 1, "{e}");
    assert!(
        e.failures[0].starts_with("webhook http://127.0.0.1:"),
        "{e}"
    );
    let mails = received(&srv);
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]["data"]
            .as_str()
            .is_some_and(|d| d.contains("Subject: offsite on nas1: test notification")),
        "{mails:?}"
    );
}
