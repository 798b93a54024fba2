//! Notifications from `offsite serve`: a webhook receiver on 127.0.0.1 gets the JSON of a failed run (a
//! target folder that does not exist) and nothing for a run that succeeded (no `on_success`); a webhook
//! that hangs delays neither the next run nor the next notification. Runs are started with "run now"
//! through the page's API, driven with curl.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::web::*;
use common::*;

/// A config with a folder target at `target` (which may not exist), the page on a free port and
/// `notify` as its `[notify]` table body; serve started; logged in: (serve, cookie jar, CSRF header).
fn start(s: &Setup, target: &Path, notify: &str) -> (Serve, PathBuf, String) {
    s.write_config(&format!("path = {:?}", target.to_str().unwrap()), "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{text}\n[notify]\n{notify}\n")).unwrap();
    let srv = start_serve(s, "");
    let jar = s.dir.path().join("jar");
    let csrf = first_login(&srv, &jar);
    (srv, jar, csrf)
}

/// One request with curl: (status, body).
fn curl(
    s: &Serve,
    jar: &Path,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, String) {
    let r = request(s, jar, method, path, headers, body);
    (r.status, r.text())
}

/// Starts a run by hand and waits for it to end (the history has `runs` reports, nothing runs):
/// the status of the last run.
fn run_now(srv: &Serve, jar: &Path, csrf: &str, runs: usize) -> String {
    let (code, body) = curl(srv, jar, "POST", "/api/run", &[csrf.into()], Some("{}"));
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = json(&curl(srv, jar, "GET", "/api/status", &[], None).1);
        let history = json(&curl(srv, jar, "GET", "/api/history", &[], None).1);
        if st["running"].is_null()
            && history.as_array().map_or(0, |a| a.len()) >= runs
            && !st["last"].is_null()
        {
            return st["last"]["status"].as_str().unwrap_or("").to_owned();
        }
        assert!(Instant::now() < deadline, "the run did not finish: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads one HTTP request from `s`: (request line, body).
fn read_request(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (line.trim().to_owned(), body)
}

/// A webhook receiver: every request's (request line, JSON body) goes to the channel, answered 200.
/// With `hang_first`, the first connection is read and then held without an answer.
fn receiver(hang_first: bool) -> (u16, mpsc::Receiver<(String, serde_json::Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, s) in listener.incoming().enumerate() {
            let Ok(mut s) = s else { return };
            let (line, body) = read_request(&mut s);
            let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            if tx.send((line, v)).is_err() {
                return;
            }
            if hang_first && i == 0 {
                held.push(s);
                continue;
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

#[test]
fn a_failed_run_is_told_and_a_good_one_is_not() {
    let s = Setup::new();
    fill_share(&s.share);
    let (port, hooks) = receiver(false);
    // The target folder does not exist yet: the first run fails.
    let (srv, jar, csrf) = start(
        &s,
        &s.target.join("missing"),
        &format!("webhook = \"http://127.0.0.1:{port}/hook?token=SEKRIT#backups\""),
    );
    assert_eq!(run_now(&srv, &jar, &csrf, 1), "failed");
    let (line, v) = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("no webhook call for the failed run");
    assert_eq!(line, "POST /hook?token=SEKRIT HTTP/1.1");
    assert_eq!(v["topic"], "backups");
    assert_eq!(v["priority"], 5);
    assert!(
        v["title"]
            .as_str()
            .is_some_and(|t| t.ends_with(": backup FAILED")),
        "{v}"
    );
    assert!(
        v["text"].as_str().is_some_and(|t| t.contains("FAILED")),
        "{v}"
    );
    assert_eq!(v["offsite"]["status"], "failed", "{v}");
    assert_eq!(v["offsite"]["slot"], "now", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");

    // The target appears: the next run succeeds, and without on_success nothing is sent.
    std::fs::create_dir_all(s.target.join("missing")).unwrap();
    assert_eq!(run_now(&srv, &jar, &csrf, 2), "ok");
    assert!(
        hooks.recv_timeout(Duration::from_secs(3)).is_err(),
        "a successful run was told without on_success"
    );

    // The page's test button goes through the same channel.
    let (code, body) = curl(&srv, &jar, "POST", "/api/notify/test", &[], None);
    assert_eq!(code, 403, "CSRF token required: {body}");
    let (code, body) = curl(
        &srv,
        &jar,
        "POST",
        "/api/notify/test",
        std::slice::from_ref(&csrf),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["ok"], true);
    let (_, v) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("no test notification");
    assert_eq!(v["offsite"]["status"], "test");

    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(!log.contains("SEKRIT"), "the log holds the webhook's token");
}

#[test]
fn a_webhook_that_hangs_delays_neither_the_next_run_nor_its_notification() {
    let s = Setup::new();
    fill_share(&s.share);
    let (port, hooks) = receiver(true);
    let (srv, jar, csrf) = start(
        &s,
        &s.target.join("missing"),
        &format!("webhook = \"http://127.0.0.1:{port}/hook\""),
    );
    assert_eq!(run_now(&srv, &jar, &csrf, 1), "failed");
    hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("no webhook call for the first run");
    // That call now hangs (for up to 30 s). The next run starts and ends at once, and is told at once.
    let t = Instant::now();
    assert_eq!(run_now(&srv, &jar, &csrf, 2), "failed");
    let (_, v) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("the second run's notification waited for the hanging one");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the second run took {:?}",
        t.elapsed()
    );
    assert_eq!(v["offsite"]["status"], "failed");
}
