//! `offsite serve` for the page's tests: started on a free loopback port, killed when dropped, and
//! requests to it with `curl` over HTTPS (the self-signed certificate accepted) and a cookie jar.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Setup, offsite};

/// A running `offsite serve` (killed and reaped on drop, also when an assertion fails).
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
    pub base: String,
    /// The first-run setup code it printed.
    pub setup_code: String,
}

impl Serve {
    /// Whether the server process is still running.
    pub fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `offsite serve --config <s.config>` with the page on a free loopback port; `web` adds lines
/// to the config's `[web]` table (made at the end when there is none). Its stderr goes to
/// `<s.dir>/serve.log`. Returns once the setup code is printed.
pub fn start_serve(s: &Setup, web: &str) -> Serve {
    let port = free_port();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let lines = format!("listen = \"127.0.0.1:{port}\"\n{web}\n");
    let text = if text.contains("\n[web]\n") {
        text.replacen("\n[web]\n", &format!("\n[web]\n{lines}"), 1)
    } else {
        format!("{text}\n[web]\n{lines}")
    };
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
    let mut srv = Serve {
        child,
        log,
        base: format!("https://127.0.0.1:{port}"),
        setup_code: String::new(),
    };
    srv.setup_code = wait_setup_code(&srv.log);
    srv
}

/// Waits (30 s at most) for `offsite serve`'s setup code in its log.
pub fn wait_setup_code(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(code) = text
            .lines()
            .find_map(|l| l.split("with the setup code ").nth(1))
        {
            return code.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "serve did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response: status, header block, body, and whether it arrived whole (curl's exit status).
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub complete: bool,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        json(&self.text())
    }
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// One request with curl; `jar` keeps the cookies, `body` is sent as JSON.
pub fn request(
    srv: &Serve,
    jar: &Path,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let head_file = dir.path().join("head");
    let body_file = dir.path().join("body");
    let mut c = Command::new("curl");
    c.args(["-sk", "--max-time", "120", "-X", method, "-D"])
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .arg(format!("{}{path}", srv.base));
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    // A cut-short body is the caller's to judge (some tests expect one).
    let complete = c.output().expect("curl").status.success();
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: std::fs::read(&body_file).unwrap_or_default(),
        complete,
    }
}

/// Logs in through the first-run setup; returns the CSRF header to send with changes.
pub fn first_login(srv: &Serve, jar: &Path) -> String {
    let r = request(
        srv,
        jar,
        "POST",
        "/api/setup",
        &[],
        Some(&format!(
            "{{\"code\":\"{}\",\"password\":\"correct horse battery staple\"}}",
            srv.setup_code
        )),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    format!("x-csrf-token: {}", r.json()["csrf"].as_str().unwrap())
}
