//! `offsite serve` as a user and an attacker on the LAN see it, through `curl` over HTTPS: first-run setup
//! with the console's code, every API route closed without a session, CSRF required on changes, guessing
//! slowed, run now with live events and the history — and no secret in any response or log line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Serve {
    child: Child,
    log: PathBuf,
    base: String,
    setup_code: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(s: &Setup) -> Serve {
    let port = free_port();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text = text.replacen(
        "[[share]]",
        &format!("[web]\nlisten = \"127.0.0.1:{port}\"\n\n[[share]]"),
        1,
    );
    std::fs::write(&s.config, text).unwrap();
    let log = s.dir.path().join("serve.log");
    let child = offsite()
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("OFFSITE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed and reaped by Drop, also when an assertion fails.
    let mut srv = Serve {
        child,
        log,
        base: format!("https://127.0.0.1:{port}"),
        setup_code: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&srv.log).unwrap_or_default();
        if let Some(code) = text
            .lines()
            .find_map(|l| l.split("with the setup code ").nth(1))
        {
            srv.setup_code = code.trim().to_owned();
            return srv;
        }
        assert!(Instant::now() < deadline, "serve did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request with curl: (status, response headers, body). `jar` keeps the cookies.
fn curl(
    s: &Serve,
    jar: &Path,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut c = Command::new("curl");
    c.args(["-sk", "-X", method, "-D", "-", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .arg(format!("{}{path}", s.base));
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn setup_sessions_csrf_brake_run_now_and_no_secrets() {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    let srv = start(&s);
    let jar = s.dir.path().join("jar");
    let other = s.dir.path().join("jar-attacker");
    let seen = std::cell::RefCell::new(String::new());
    let call = |jar: &Path, m: &str, p: &str, h: &[String], b: Option<&str>| {
        let r = curl(&srv, jar, m, p, h, b);
        // Everything but the cookie that hands the session over (that is its one place).
        for l in r.1.lines() {
            if !l.to_lowercase().starts_with("set-cookie:") {
                seen.borrow_mut().push_str(l);
            }
        }
        seen.borrow_mut().push_str(&r.2);
        r
    };

    // Every API route is closed without a session.
    for (m, p) in [
        ("GET", "/api/status"),
        ("GET", "/api/events"),
        ("GET", "/api/history"),
        ("POST", "/api/run"),
        ("POST", "/api/cancel"),
        ("POST", "/api/logout"),
    ] {
        let (code, _, _) = call(&other, m, p, &[], Some("{}"));
        assert_eq!(code, 401, "{m} {p}");
    }
    // The page itself loads, with a strict policy.
    let (code, head, body) = call(&other, "GET", "/", &[], None);
    assert_eq!(code, 200);
    assert!(body.contains("<title>offsite</title>"));
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'self'"),
        "{head}"
    );

    // First run: the password can only be set with the console's code.
    let s0 = json(&call(&other, "GET", "/api/session", &[], None).2);
    assert_eq!(s0["setup_needed"], true);
    let password = "correct horse battery staple";
    let (code, _, _) = call(
        &other,
        "POST",
        "/api/setup",
        &[],
        Some(&format!(
            "{{\"code\":\"nope\",\"password\":\"{password}\"}}"
        )),
    );
    assert_eq!(code, 403);
    let (code, head, body) = call(
        &jar,
        "POST",
        "/api/setup",
        &[],
        Some(&format!(
            "{{\"code\":\"{}\",\"password\":\"{password}\"}}",
            srv.setup_code
        )),
    );
    assert_eq!(code, 200, "{body}");
    let cookie = head
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie:"))
        .unwrap()
        .to_owned();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let csrf = json(&body)["csrf"].as_str().unwrap().to_owned();
    // The code is spent.
    let (code, _, _) = call(
        &other,
        "POST",
        "/api/setup",
        &[],
        Some(&format!(
            "{{\"code\":\"{}\",\"password\":\"another password!\"}}",
            srv.setup_code
        )),
    );
    assert_eq!(code, 403);

    // A change without the CSRF token is refused, with it accepted.
    let (code, _, _) = call(&jar, "POST", "/api/run", &[], Some("{}"));
    assert_eq!(code, 403);
    let (code, _, _) = call(
        &jar,
        "POST",
        "/api/run",
        &["x-csrf-token: wrong".into()],
        Some("{}"),
    );
    assert_eq!(code, 403);
    let token = format!("x-csrf-token: {csrf}");
    let (code, _, _) = call(
        &jar,
        "POST",
        "/api/run",
        std::slice::from_ref(&token),
        Some("{}"),
    );
    assert_eq!(code, 202);
    // The run's end arrives on the event stream, then shows in status and history.
    let mut events = Command::new("curl")
        .args(["-skN", "--max-time", "60", "-b"])
        .arg(&jar)
        .arg(format!("{}/api/events", srv.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut finished = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = json(&call(&jar, "GET", "/api/status", &[], None).2);
        if st["running"].is_null() && !st["last"].is_null() {
            break st;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["last"]["status"], "ok", "{status}");
    // Another run, watched live.
    let (code, _, _) = call(
        &jar,
        "POST",
        "/api/run",
        std::slice::from_ref(&token),
        Some("{}"),
    );
    assert_eq!(code, 202);
    // (The stream may still hold the first run's end: wait for this run's start, then its end.)
    let lines = BufReader::new(events.stdout.take().unwrap());
    let mut started = false;
    for line in lines.lines() {
        let line = line.unwrap();
        seen.borrow_mut().push_str(&line);
        started |= line.starts_with("data:") && line.contains("\"run_started\"");
        if started && line.starts_with("data:") && line.contains("\"run_finished\"") {
            finished = true;
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(finished, "no run_finished event");
    let history = json(&call(&jar, "GET", "/api/history", &[], None).2);
    assert!(history.as_array().unwrap().len() >= 2, "{history}");

    // Guessing is slowed: after three failures even the right password must wait (429, Retry-After).
    for _ in 0..3 {
        let (code, _, _) = call(
            &other,
            "POST",
            "/api/login",
            &[],
            Some("{\"password\":\"guess\"}"),
        );
        assert_eq!(code, 401);
    }
    let (code, head, _) = call(
        &other,
        "POST",
        "/api/login",
        &[],
        Some(&format!("{{\"password\":\"{password}\"}}")),
    );
    assert_eq!(code, 429);
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");

    // Log out: the session is gone.
    let (code, _, _) = call(
        &jar,
        "POST",
        "/api/logout",
        std::slice::from_ref(&token),
        None,
    );
    assert_eq!(code, 204);
    let (code, _, _) = call(&jar, "GET", "/api/status", &[], None);
    assert_eq!(code, 401);

    // No secret in any response or in the debug log: the password, the session token, the key file,
    // the TLS private key, the stored hash.
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let session = cookie
        .split("offsite_session=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let key_file = std::fs::read_to_string(&s.key).unwrap();
    let master = key_file
        .lines()
        .find_map(|l| l.strip_prefix("master "))
        .unwrap()
        .to_owned();
    let state = s.dir.path().join("state/web");
    let tls_key = std::fs::read_to_string(state.join("key.pem")).unwrap();
    let tls_key_body = tls_key.lines().nth(1).unwrap().to_owned();
    let admin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("admin.json")).unwrap()).unwrap();
    let hash = admin["hash"].as_str().unwrap().to_owned();
    let seen = seen.into_inner();
    for secret in [password.to_owned(), session, tls_key_body, hash, master] {
        assert!(
            !seen.contains(secret.as_str()),
            "a response contains a secret"
        );
        assert!(!log.contains(secret.as_str()), "the log contains a secret");
    }
    assert!(log.contains("failed login from 127.0.0.1"), "{log}");
}
