//! `offsite serve` as a user and an attacker on the LAN see it, through `curl` over HTTPS: first-run setup
//! with the console's code, every API route closed without a session, CSRF required on changes, guessing
//! slowed, run now with live events and the history — and no secret in any response or log line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::web::*;
use common::*;

fn start(s: &Setup) -> Serve {
    start_serve(s, "")
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
    let r = request(s, jar, method, path, headers, body);
    (r.status, r.head.clone(), r.text())
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
        // Generous: it spans two runs, on a machine that may be running other tests too.
        .args(["-skN", "--max-time", "600", "-b"])
        .arg(&jar)
        .arg(format!("{}/api/events", srv.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut finished = false;
    let deadline = Instant::now() + Duration::from_secs(180);
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

/// The page's settings, from a box without a key to a nightly backup over SSH: create the key (its
/// recovery text shown once), point the target at a real sshd, make the box's SSH key and authorize
/// it there, trust the host key the user was shown (and no other), choose a share inside the data
/// volumes only, set the schedule; the saved config file then backs up and restores with the CLI. A
/// changed host key is shown as such and blocks runs until it is replaced on purpose.
#[test]
fn settings_take_a_new_box_to_a_backup_over_ssh() {
    let sshd = testpeers::TestSshd::start();
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    std::fs::remove_file(&s.key).unwrap();
    let volume = s.dir.path();
    let srv = start_serve(
        &s,
        &format!("data_volumes = [{:?}]", volume.to_str().unwrap()),
    );
    let jar = s.dir.path().join("jar");
    let seen = std::cell::RefCell::new(String::new());
    let call = |m: &str, p: &str, h: &[String], b: Option<&str>| {
        let r = curl(&srv, &jar, m, p, h, b);
        seen.borrow_mut().push_str(&r.2);
        (r.0, json(if r.2.is_empty() { "null" } else { &r.2 }))
    };
    // Every settings route is closed without a session, and changes need the CSRF token.
    for (m, p) in [
        ("GET", "/api/config"),
        ("POST", "/api/key"),
        ("PUT", "/api/target"),
        ("GET", "/api/ssh-key"),
        ("POST", "/api/ssh-key"),
        ("POST", "/api/host-key/test"),
        ("POST", "/api/host-key/trust"),
        ("PUT", "/api/shares"),
        ("GET", "/api/browse"),
        ("PUT", "/api/schedule"),
        ("PUT", "/api/notify"),
        ("GET", "/api/log"),
    ] {
        let (code, _) = call(m, p, &[], Some("{}"));
        assert_eq!(code, 401, "{m} {p}");
    }
    let csrf = first_login(&srv, &jar);
    let h = std::slice::from_ref(&csrf);
    let (code, _) = call(
        "PUT",
        "/api/schedule",
        &[],
        Some("{\"enabled\":true,\"at\":\"01:00\",\"jitter_minutes\":0}"),
    );
    assert_eq!(code, 403, "a change without the CSRF token");

    // No key yet: the status says so, and a run fails with a message naming the key file.
    let (_, st) = call("GET", "/api/status", &[], None);
    assert_eq!(st["key_missing"], true, "{st}");
    let (code, created) = call("POST", "/api/key", h, Some("{\"action\":\"create\"}"));
    assert_eq!(code, 200, "{created}");
    let recovery = created["recovery_text"].as_str().unwrap().to_owned();
    assert_eq!(recovery, std::fs::read_to_string(&s.key).unwrap());
    let master = recovery
        .lines()
        .find_map(|l| l.strip_prefix("master "))
        .unwrap()
        .to_owned();
    let (code, _) = call("POST", "/api/key", h, Some("{\"action\":\"create\"}"));
    assert_eq!(code, 409, "a key is never replaced");
    let (_, cfg) = call("GET", "/api/config", &[], None);
    assert_eq!(cfg["key"]["key_id"], created["key_id"]);

    // The target: the real sshd.
    let t = sshd.target();
    let remote = s.dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let body = serde_json::json!({
        "host": "127.0.0.1", "port": t.port, "user": t.user, "path": remote.to_str().unwrap(),
    })
    .to_string();
    let (code, cfg) = call("PUT", "/api/target", h, Some(&body));
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["target"]["host"], "127.0.0.1");
    let (code, e) = call(
        "PUT",
        "/api/target",
        h,
        Some("{\"host\":\"x\",\"path\":\"/b\"}"),
    );
    assert_eq!(code, 400, "a host without a user: {e}");
    assert!(e["error"].as_str().unwrap().contains("target.user"), "{e}");

    // The host key as the user sees it; trusting another fingerprint than the shown one fails.
    let (code, test) = call("POST", "/api/host-key/test", h, None);
    assert_eq!(code, 200, "{test}");
    assert_eq!(test["status"], "unknown");
    assert_eq!(
        test["fingerprint"].as_str().unwrap(),
        sshd.host_fingerprint()
    );
    let (code, _) = call(
        "POST",
        "/api/host-key/trust",
        h,
        Some("{\"fingerprint\":\"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}"),
    );
    assert_eq!(code, 409);
    let trust = serde_json::json!({ "fingerprint": test["fingerprint"] }).to_string();
    let (code, _) = call("POST", "/api/host-key/trust", h, Some(&trust));
    assert_eq!(code, 200);

    // The box's SSH key, authorized on the server in its restricted form's plain sibling.
    let (code, key) = call("POST", "/api/ssh-key", h, Some("{}"));
    assert_eq!(code, 200, "{key}");
    let line = key["authorized_keys_line"].as_str().unwrap();
    assert!(line.starts_with("ssh-ed25519 "), "{line}");
    assert!(
        key["rrsync_line"]
            .as_str()
            .unwrap()
            .starts_with("command=\"rrsync ")
    );
    let (code, _) = call("POST", "/api/ssh-key", h, Some("{}"));
    assert_eq!(code, 409, "an SSH key is replaced only on purpose");
    let (code, test) = call("POST", "/api/host-key/test", h, None);
    assert_eq!(code, 200);
    assert_eq!(test["status"], "trusted");
    assert_eq!(
        test["connection"]["ok"], false,
        "not authorized yet: {test}"
    );
    sshd.authorize(line);
    let (_, test) = call("POST", "/api/host-key/test", h, None);
    assert_eq!(test["connection"]["ok"], true, "{test}");

    // Shares: only inside the data volumes; the picker lists folders there.
    let (code, b) = call("GET", "/api/browse?path=%2Fetc", &[], None);
    assert_eq!(code, 400, "{b}");
    let (code, b) = call(
        "GET",
        &format!(
            "/api/browse?path={}",
            volume.to_str().unwrap().replace('/', "%2F")
        ),
        &[],
        None,
    );
    assert_eq!(code, 200, "{b}");
    assert!(
        b["dirs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == s.share.to_str().unwrap()),
        "{b}"
    );
    let shares = |path: &str| {
        serde_json::json!({ "shares": [{
            "name": "docs", "path": path, "encrypt": true, "exclude": ["*.tmp"],
            "retention": { "last": 10 },
        }]})
        .to_string()
    };
    let (code, e) = call("PUT", "/api/shares", h, Some(&shares("/etc")));
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("not inside a data volume"),
        "{e}"
    );
    let escape = s.dir.path().join("escape");
    std::os::unix::fs::symlink("/etc", &escape).unwrap();
    let (code, _) = call(
        "PUT",
        "/api/shares",
        h,
        Some(&shares(escape.to_str().unwrap())),
    );
    assert_eq!(code, 400, "a link out of the volume");
    let (code, cfg) = call(
        "PUT",
        "/api/shares",
        h,
        Some(&shares(s.share.to_str().unwrap())),
    );
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["shares"][0]["exclude"][0], "*.tmp");

    // Schedule: saved, and the service reschedules at once.
    let (code, cfg) = call(
        "PUT",
        "/api/schedule",
        h,
        Some("{\"enabled\":true,\"at\":\"04:10\",\"jitter_minutes\":0}"),
    );
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["schedule"]["at"], "04:10");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st) = call("GET", "/api/status", &[], None);
        let at = st["next"]["*"]["at"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let local = std::process::Command::new("date")
            .args(["-d", &at, "+%H:%M"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&local.stdout).trim() == "04:10" {
            break;
        }
        assert!(Instant::now() < deadline, "not rescheduled: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Run now: a snapshot over SSH; the config the page wrote restores it with the CLI.
    let wait_run = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, st) = call("GET", "/api/status", &[], None);
            if st["running"].is_null() && !st["last"].is_null() {
                return st;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (code, _) = call("POST", "/api/run", h, Some("{}"));
    assert_eq!(code, 202);
    let st = wait_run();
    assert_eq!(st["last"]["status"], "ok", "{st}");
    assert!(st["shares"][0]["last_success"].is_string(), "{st}");
    // The target's free space, asked over SSH (`df`, this key may run it) in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = call("GET", "/api/status", &[], None);
        if let Some(free) = st["remote_space"]["free_bytes"].as_u64() {
            assert!(free > 0, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "no free space: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out_dir = s.dir.path().join("restored");
    let out = offsite()
        .args(["restore", "--config"])
        .arg(&s.config)
        .args(["--share", "docs", "--to"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree_map(&out_dir, &|_| false),
        expected(&s.share, &|p| p.ends_with(b".tmp")),
    );

    // The host key changes: shown as changed, runs blocked; replacing it on purpose unblocks them.
    let known = s.dir.path().join("state/ssh/known_hosts");
    let other = s.dir.path().join("other_host_key");
    testpeers::keygen(&other, "ed25519", "");
    let line = std::fs::read_to_string(&known).unwrap();
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    let other_pub = testpeers::read_pub(&other);
    fields[2] = other_pub.split_whitespace().nth(1).unwrap();
    std::fs::write(&known, format!("{}\n", fields.join(" "))).unwrap();
    let (_, test) = call("POST", "/api/host-key/test", h, None);
    assert_eq!(test["status"], "changed", "{test}");
    let (code, _) = call("POST", "/api/run", h, Some("{}"));
    assert_eq!(code, 202);
    let st = wait_run();
    assert_eq!(st["last"]["status"], "failed", "{st}");
    assert!(
        st["last"]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("host key"),
        "{st}"
    );
    let trust = serde_json::json!({ "fingerprint": test["fingerprint"] }).to_string();
    let (code, _) = call("POST", "/api/host-key/trust", h, Some(&trust));
    assert_eq!(code, 409, "a changed key needs replace");
    let trust =
        serde_json::json!({ "fingerprint": test["fingerprint"], "replace": true }).to_string();
    let (code, _) = call("POST", "/api/host-key/trust", h, Some(&trust));
    assert_eq!(code, 200);
    let (code, _) = call("POST", "/api/run", h, Some("{}"));
    assert_eq!(code, 202);
    assert_eq!(wait_run()["last"]["status"], "ok");

    // The log view has the runs; no response after the key's creation, and no log line, holds a secret.
    let (_, log) = call("GET", "/api/log", &[], None);
    assert!(
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("run finished")),
        "{log}"
    );
    let private = std::fs::read_to_string(s.dir.path().join("state/ssh/id_ed25519")).unwrap();
    let private_body = private.lines().nth(1).unwrap().to_owned();
    let seen = seen.into_inner();
    let after_key = seen.split_once(&master).map(|x| x.1).unwrap_or_default();
    let log_text = std::fs::read_to_string(&srv.log).unwrap();
    for secret in [master.as_str(), private_body.as_str()] {
        assert!(!after_key.contains(secret), "a response holds a secret");
        assert!(!log_text.contains(secret), "the log holds a secret");
    }
}

/// The README's first command: `offsite serve` without a config starts on the embedded demo (a share of
/// sample files and a folder target in ./offsite-data), and from the page (password, key, run now) the
/// demo share lands on its target; a second start keeps the config it made.
#[test]
fn serve_without_config_runs_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("serve.log");
    let spawn = || {
        offsite()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let mut srv = Serve {
        child: spawn(),
        log: log.clone(),
        base: format!("https://127.0.0.1:{port}"),
        setup_code: String::new(),
    };
    srv.setup_code = wait_setup_code(&log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("wrote the demo config"), "{text}");
    assert!(text.contains("no master key yet"), "{text}");
    let jar = dir.path().join("jar");
    let csrf = first_login(&srv, &jar);
    let h = std::slice::from_ref(&csrf);
    let (code, _, body) = curl(
        &srv,
        &jar,
        "POST",
        "/api/key",
        h,
        Some("{\"action\":\"create\"}"),
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = curl(&srv, &jar, "POST", "/api/run", h, Some("{}"));
    assert_eq!(code, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = json(&curl(&srv, &jar, "GET", "/api/status", &[], None).2);
        if st["running"].is_null() && !st["last"].is_null() {
            break st;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st["last"]["status"], "ok", "{st}");
    let data = dir.path().join("offsite-data");
    let snaps: Vec<_> = std::fs::read_dir(data.join("target/demo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(".offsite-manifest").is_file())
        .collect();
    assert_eq!(snaps.len(), 1, "one complete snapshot of the demo share");
    // The demo's files restore from it with the CLI and the config the demo wrote.
    let out = offsite()
        .args(["restore", "--config"])
        .arg(data.join("offsite.toml"))
        .args(["--share", "demo", "--to"])
        .arg(dir.path().join("restored"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree_map(&dir.path().join("restored"), &|_| false),
        expected(&data.join("demo"), &|_| false)
    );
    // A second start keeps the config and the key.
    drop(srv);
    let config = std::fs::read_to_string(data.join("offsite.toml")).unwrap();
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("admin page: https://") {
            assert!(
                !text.contains("wrote the demo config") && !text.contains("no master key"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not start again: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        std::fs::read_to_string(data.join("offsite.toml")).unwrap(),
        config
    );
}
