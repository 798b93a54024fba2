//! `offsite serve` against a stranger on the LAN who does not play by the rules: slow connections that
//! try to hold every slot ("slowloris": silent sockets, half a TLS handshake, headers or a body trickled a
//! byte at a time), oversize bodies, and every route fed hostile input (mutated JSON, traversal attempts,
//! wrong types, huge and odd values). The owner must still get in, the server must cut the slow ones
//! within its documented bounds, nothing may answer with a server error or read outside the data volumes,
//! and the config must still load.
//!
//! The attacker's connections come from 127.0.0.2 (Linux routes all of 127/8 to the loopback), the owner's
//! from 127.0.0.1, so the per-address cap can be seen at work.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::web::*;
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// The page's certificate is self-signed: the test accepts any (it checks the server, not TLS).
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth(),
    )
}

fn port_of(srv: &Serve) -> u16 {
    srv.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TCP connection to the page from `src`.
fn tcp_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(sock.into())
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection from `src`, handshake done.
fn tls_from(cfg: &Arc<ClientConfig>, src: Ipv4Addr, port: u16) -> std::io::Result<Tls> {
    let mut sock = tcp_from(src, port)?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut conn = ClientConnection::new(cfg.clone(), ServerName::try_from("127.0.0.1").unwrap())
        .map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// Whether the server has closed a connection (waits up to `wait` for it to say so).
fn closed<S: Read>(s: &mut S, sock: &TcpStream, wait: Duration) -> bool {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error response before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true, // reset, or TLS ended without close_notify
        }
    }
}

/// One request on a fresh TLS connection from `src` (`Connection: close`): (status, body).
fn send(
    cfg: &Arc<ClientConfig>,
    src: Ipv4Addr,
    port: u16,
    method: &str,
    target: &str,
    headers: &[String],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = tls_from(cfg, src, port).unwrap();
    s.sock
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for h in headers {
        req.extend_from_slice(h.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    // A server that refuses early may close before the whole body is written: its answer still counts.
    let _ = s.write_all(&req).and_then(|()| s.flush());
    let out = read_reply(&mut s).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {target}: no response head"));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[end + 4..].to_vec())
}

/// Reads what the server sends until it closes, without writing anything more: a server that refused a
/// body closes early, and `StreamOwned::read` would first try to flush the rest of that body (and fail
/// on the closed socket before returning the answer that already arrived).
fn read_reply(s: &mut Tls) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.conn.reader().read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return Ok(out), // closed without close_notify
        }
        match s.conn.read_tls(&mut s.sock) {
            Ok(0) => {
                // Whatever the last records held.
                let _ = s.conn.process_new_packets();
                let _ = s.conn.reader().read_to_end(&mut out);
                return Ok(out);
            }
            Ok(_) => {
                if let Err(e) = s.conn.process_new_packets() {
                    return Err(std::io::Error::other(format!("TLS: {e}")));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(std::io::Error::new(e.kind(), "no answer in time"));
            }
            Err(_) => return Ok(out), // reset after the answer
        }
    }
}

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OWNER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// `web::guard::MAX_CONNECTIONS_PER_ADDRESS`.
const PER_ADDRESS: usize = 16;

#[test]
fn slow_clients_cannot_lock_the_owner_out() {
    let s = Setup::new();
    s.local_config("");
    let mut srv = start_serve(&s, "");
    let port = port_of(&srv);
    let cfg = tls_config();

    // The attacker fills its share of the slots with four kinds of slow connection, four of each.
    let started = Instant::now();
    let mut silent = Vec::new(); // TCP only, nothing sent: the 10 s handshake bound
    let mut half_tls = Vec::new(); // the first bytes of a ClientHello: the same bound
    let mut slow_head = Vec::new(); // headers trickled: the 30 s header bound
    let mut slow_body = Vec::new(); // a body trickled a byte at a time: the 60 s body bound
    for _ in 0..4 {
        silent.push(tcp_from(ATTACKER, port).unwrap());
        let mut t = tcp_from(ATTACKER, port).unwrap();
        t.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
        half_tls.push(t);
        let mut h = tls_from(&cfg, ATTACKER, port).unwrap();
        h.write_all(b"GET /api/status HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
        slow_head.push(h);
        let mut b = tls_from(&cfg, ATTACKER, port).unwrap();
        b.write_all(
            b"POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100000\r\n\r\n{",
        )
        .unwrap();
        slow_body.push(b);
    }
    // Its seventeenth connection is closed at once, without a handshake.
    let mut extra = tcp_from(ATTACKER, port).unwrap();
    let probe = extra.try_clone().unwrap();
    assert!(
        closed(&mut extra, &probe, Duration::from_secs(5)),
        "a {}th connection from one address was kept",
        PER_ADDRESS + 1
    );

    // Meanwhile the owner sets the page up, logs in and uses it, from another address.
    let jar = s.dir.path().join("jar");
    let csrf = first_login(&srv, &jar);
    let r = request(&srv, &jar, "GET", "/api/status", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(&srv, &jar, "GET", "/api/config", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = csrf;

    // The attacker keeps trickling (every 2 s, so no single stall is long); the server cuts each kind
    // at its bound. The owner's requests keep working all along.
    let mut gone = [None::<Duration>; 4];
    while started.elapsed() < Duration::from_secs(90) && gone.iter().any(Option::is_none) {
        for h in &mut slow_head {
            let _ = h.write_all(b"x");
        }
        for b in &mut slow_body {
            let _ = b.write_all(b" ");
        }
        let kinds: [Vec<bool>; 4] = [
            silent
                .iter_mut()
                .map(|t| {
                    let p = t.try_clone().unwrap();
                    closed(t, &p, Duration::from_millis(50))
                })
                .collect(),
            half_tls
                .iter_mut()
                .map(|t| {
                    let p = t.try_clone().unwrap();
                    closed(t, &p, Duration::from_millis(50))
                })
                .collect(),
            slow_head
                .iter_mut()
                .map(|t| {
                    let p = t.sock.try_clone().unwrap();
                    closed(t, &p, Duration::from_millis(50))
                })
                .collect(),
            slow_body
                .iter_mut()
                .map(|t| {
                    let p = t.sock.try_clone().unwrap();
                    closed(t, &p, Duration::from_millis(50))
                })
                .collect(),
        ];
        for (k, c) in kinds.iter().enumerate() {
            if gone[k].is_none() && c.iter().all(|c| *c) {
                gone[k] = Some(started.elapsed());
            }
        }
        let r = request(&srv, &jar, "GET", "/api/status", &[], None);
        assert_eq!(r.status, 200, "the owner was locked out: {}", r.text());
        std::thread::sleep(Duration::from_secs(2));
    }
    let names = [
        "silent sockets",
        "half TLS handshakes",
        "trickled headers",
        "trickled bodies",
    ];
    // Bounds: 10 s, 10 s, 30 s, 60 s, plus the loop's step and a loaded machine's slack.
    let bounds = [25, 25, 50, 85];
    for k in 0..4 {
        let at = gone[k].unwrap_or_else(|| panic!("{} were never cut", names[k]));
        assert!(
            at <= Duration::from_secs(bounds[k]),
            "{} were cut only after {at:?}",
            names[k]
        );
    }
    // Its slots are free again.
    let (status, _) = send(&cfg, ATTACKER, port, "GET", "/api/session", &[], b"");
    assert_eq!(status, 200);
    assert!(srv.child_alive(), "serve died");
}

#[test]
fn oversize_bodies_are_refused_without_buffering_them() {
    let s = Setup::new();
    s.local_config("");
    let mut srv = start_serve(&s, "");
    let port = port_of(&srv);
    let cfg = tls_config();
    let big = {
        let mut b = b"{\"password\":\"".to_vec();
        // 1 MiB: over the page's 256 KiB limit, under axum's default 2 MiB one.
        b.resize(1 << 20, b'a');
        b.extend_from_slice(b"\"}");
        b
    };
    for route in ["/api/login", "/api/setup", "/api/restore", "/api/target"] {
        let method = if route == "/api/target" {
            "PUT"
        } else {
            "POST"
        };
        let (status, body) = send(&cfg, OWNER, port, method, route, &[], &big);
        // A route behind the session refuses before reading (401); the others refuse the size (413).
        assert!(
            status == 413 || status == 401,
            "{route}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The same without a length: chunked, 1 MiB.
    let mut s2 = tls_from(&cfg, OWNER, port).unwrap();
    s2.write_all(
        b"POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b'a'; 65536];
    let mut refused = false;
    for _ in 0..16 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if s2.write_all(&piece).is_err() {
            refused = true;
            break;
        }
    }
    let _ = s2.write_all(b"0\r\n\r\n");
    let out = read_reply(&mut s2).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        refused || text.starts_with("HTTP/1.1 413"),
        "a 1 MiB chunked body was not refused: {}",
        &text[..text.len().min(300)]
    );
    // The page still answers.
    let (status, _) = send(&cfg, OWNER, port, "GET", "/api/session", &[], b"");
    assert_eq!(status, 200);
    assert!(srv.child_alive(), "serve died");
}

/// A small deterministic generator (xorshift*), so a failing case replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values an attacker would try in any field.
fn hostile(vol: &str, rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let pick = rng.below(30);
    match pick {
        0 => json!(""),
        1 => json!(".."),
        2 => json!("../../../../../../etc"),
        3 => json!("/etc"),
        4 => json!("/etc/passwd"),
        5 => json!(format!("{vol}/../../../../etc")),
        6 => json!(format!("{vol}/inside/../../..")),
        7 => json!("%2e%2e/%2e%2e/etc"),
        8 => json!("a\u{0}b"),
        9 => json!("\n[target]\nhost = \"evil\"\n"),
        10 => json!("\"'; rm -rf / #"),
        11 => json!("--rsh=sh -c id"),
        12 => json!("-e"),
        13 => json!("*"),
        14 => json!("x".repeat(100_000)),
        15 => json!("\u{202e}\u{feff}ü/\u{1F600}"),
        16 => json!(0),
        17 => json!(-1),
        18 => json!(1e308),
        19 => json!(u64::MAX),
        20 => json!(65536),
        21 => json!(true),
        22 => serde_json::Value::Null,
        23 => json!([]),
        24 => json!({}),
        25 => json!([1, "a", null]),
        26 => json!({"a": {"b": [{}]}}),
        27 => json!(format!("{vol}/inside")),
        28 => json!("127.0.0.1"),
        _ => json!(["../x", "/etc/passwd", "", "a/../../b"]),
    }
}

/// Mutates a valid body: replaces, drops and adds fields (also deep in arrays and tables).
fn mutate(v: &mut serde_json::Value, vol: &str, rng: &mut Rng) {
    match v {
        serde_json::Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                match rng.below(6) {
                    0 => {
                        m.insert(k, hostile(vol, rng));
                    }
                    1 => {
                        m.remove(&k);
                    }
                    2 | 3 => {
                        if let Some(inner) = m.get_mut(&k) {
                            mutate(inner, vol, rng);
                        }
                    }
                    _ => {}
                }
            }
            if rng.below(4) == 0 {
                m.insert(format!("unknown{}", rng.below(3)), hostile(vol, rng));
            }
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                if rng.below(2) == 0 {
                    mutate(x, vol, rng);
                }
            }
            if rng.below(3) == 0 {
                a.push(hostile(vol, rng));
            }
        }
        other => {
            if rng.below(2) == 0 {
                *other = hostile(vol, rng);
            }
        }
    }
}

/// Byte-level damage to a serialized body.
fn damage(b: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(5) {
        0 if !b.is_empty() => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        1 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = (rng.next() & 0xff) as u8;
        }
        2 => b.extend_from_slice(&[0xff, 0xfe, 0xc3]),
        3 => {
            *b = b"[".repeat(10_000);
        }
        _ => {}
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[test]
fn every_route_survives_hostile_input() {
    use serde_json::json;
    let s = Setup::new();
    // The whole test folder is the data volume: the share, the target and a folder to pick lie in it.
    let vol = s.dir.path().to_path_buf();
    std::fs::create_dir_all(vol.join("inside/deeper")).unwrap();
    std::fs::write(vol.join("inside/a.txt"), b"hello").unwrap();
    std::fs::write(s.share.join("doc.txt"), b"a document").unwrap();
    let vol_s = vol.to_str().unwrap().to_owned();
    s.local_config(&format!("\n[web]\ndata_volumes = [{vol_s:?}]\n"));
    s.backup_ok();
    let mut srv = start_serve(&s, "");
    let port = port_of(&srv);
    let cfg = tls_config();
    let jar = s.dir.path().join("jar");
    let csrf = first_login(&srv, &jar);
    let cookie = {
        let text = std::fs::read_to_string(&jar).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("offsite_session"))
            .unwrap_or_else(|| panic!("no session cookie: {text}"));
        let f: Vec<&str> = line.split('\t').collect();
        format!("cookie: {}={}", f[5], f[6])
    };
    let auth = [cookie.clone(), csrf.clone()];
    let snap = request(&srv, &jar, "GET", "/api/snapshots?share=docs", &[], None).json();
    let snap_id = snap.to_string();
    let snap_id = snap_id
        .split('"')
        .find(|p| p.len() == 18 && p.ends_with('Z'))
        .unwrap_or("2026-01-01T000000Z")
        .to_owned();

    // (method, route, a valid body)
    let bodies: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "PUT",
            "/api/target",
            json!({"path": s.target.to_str().unwrap()}),
        ),
        (
            "PUT",
            "/api/shares",
            json!({"shares": [{"name": "docs", "path": s.share.to_str().unwrap()},
                               {"name": "more", "path": format!("{vol_s}/inside"), "encrypt": false,
                                "exclude": ["*.tmp"], "retention": {"last": 3}, "schedule": "03:00"}]}),
        ),
        (
            "PUT",
            "/api/schedule",
            json!({"enabled": false, "at": "02:30", "jitter_minutes": 5}),
        ),
        (
            "PUT",
            "/api/notify",
            json!({"on_success": false, "webhook": "http://127.0.0.1:9/hook",
                   "smtp": {"host": "127.0.0.1", "port": 9, "from": "a@b.c", "to": ["d@e.f"]},
                   "smtp_password": "x"}),
        ),
        (
            "POST",
            "/api/key",
            json!({"action": "import", "text": "nope"}),
        ),
        ("POST", "/api/ssh-key", json!({"replace": false})),
        (
            "POST",
            "/api/host-key/trust",
            json!({"fingerprint": "SHA256:abc", "replace": false}),
        ),
        (
            "POST",
            "/api/restore",
            json!({"share": "docs", "snapshot": snap_id, "paths": ["doc.txt"],
                   "to": format!("{vol_s}/restored"), "overwrite": false}),
        ),
        (
            "POST",
            "/api/bundle/import",
            json!({"passphrase": "a long passphrase here"}),
        ),
        ("POST", "/api/bundle/dismiss", json!({})),
        (
            "POST",
            "/api/bundle/export",
            json!({"passphrase": "a long passphrase here", "to": format!("{vol_s}/x")}),
        ),
        ("POST", "/api/cancel", json!({})),
    ];
    let gets: Vec<(&str, Vec<&str>)> = vec![
        ("/api/browse", vec!["path"]),
        ("/api/snapshots", vec!["share"]),
        ("/api/ls", vec!["share", "snapshot", "path"]),
        ("/api/download", vec!["share", "snapshot", "path"]),
        ("/api/restore/x", vec!["job"]),
        ("/api/status", vec![]),
        ("/api/history", vec!["share"]),
        ("/api/log", vec![]),
        ("/api/config", vec![]),
        ("/api/bundle", vec![]),
        ("/api/shares", vec![]),
    ];
    let cases: usize = std::env::var("OFFSITE_WEB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("OFFSITE_WEB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0ff5_17e0);
    eprintln!("web fuzz: seed {seed}, {cases} cases per route");
    let mut rng = Rng(seed | 1);
    let mut seen = std::collections::BTreeMap::<String, std::collections::BTreeSet<u16>>::new();
    let check = |what: &str, status: u16, body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        assert!(
            (200..500).contains(&status),
            "{what}: {status} {}",
            &text[..text.len().min(400)]
        );
        assert!(
            !text.contains("root:x:0:0")
                && !text.contains("\"passwd\"")
                && !text.contains("shadow"),
            "{what}: something outside the data volumes came back: {}",
            &text[..text.len().min(400)]
        );
    };
    for case in 0..cases {
        for (method, route, valid) in &bodies {
            let mut v = valid.clone();
            if case > 0 {
                mutate(&mut v, &vol_s, &mut rng);
            }
            let mut b = serde_json::to_vec(&v).unwrap();
            if case > 0 && rng.below(4) == 0 {
                damage(&mut b, &mut rng);
            }
            let what = format!(
                "case {case}: {method} {route} {}",
                String::from_utf8_lossy(&b[..b.len().min(300)])
            );
            let (status, body) = send(&cfg, OWNER, port, method, route, &auth, &b);
            check(&what, status, &body);
            // A target or schedule the fuzzer got accepted is put back at once: the service must not
            // start a night's run into wherever a mutation pointed it.
            if status == 200 && case > 0 && matches!(*route, "/api/target" | "/api/schedule") {
                let b = serde_json::to_vec(valid).unwrap();
                let (status, body) = send(&cfg, OWNER, port, method, route, &auth, &b);
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            }
            seen.entry(format!("{method} {route}"))
                .or_default()
                .insert(status);
        }
        for (route, params) in &gets {
            let mut q = Vec::new();
            for p in params {
                let value = match hostile(&vol_s, &mut rng) {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let value = match *p {
                    "share" if rng.below(2) == 0 => "docs".to_owned(),
                    "snapshot" if rng.below(2) == 0 => snap_id.clone(),
                    _ => value,
                };
                // Sometimes raw, unencoded or badly encoded.
                let enc = match rng.below(6) {
                    0 => value.replace(' ', "+"),
                    1 => format!("{}%zz%4", pct(&value)),
                    _ => pct(&value),
                };
                q.push(format!("{p}={enc}"));
            }
            if rng.below(5) == 0 {
                q.push(q.first().cloned().unwrap_or_default());
            }
            let target = if q.is_empty() {
                route.to_string()
            } else {
                format!("{route}?{}", q.join("&"))
            };
            let target: String = target.chars().filter(|c| c.is_ascii_graphic()).collect();
            let what = format!("case {case}: GET {}", &target[..target.len().min(300)]);
            let (status, body) = send(&cfg, OWNER, port, "GET", &target, &auth, b"");
            check(&what, status, &body);
            seen.entry(format!("GET {route}"))
                .or_default()
                .insert(status);
        }
    }
    eprintln!("statuses seen: {seen:?}");

    // Still alive, no panic logged, and the config it holds loads and keeps every share in the volumes.
    assert!(srv.child_alive(), "serve died");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(!log.contains("panicked"), "a handler panicked: {log}");
    let r = request(&srv, &jar, "GET", "/api/config", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    for sh in r.json()["shares"].as_array().unwrap() {
        let p = sh["path"].as_str().unwrap();
        assert!(
            p == s.share.to_str().unwrap() || p.starts_with(&format!("{vol_s}/")),
            "a share outside the data volumes was saved: {p}"
        );
    }
    let out = offsite()
        .args(["snapshots", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the saved config does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was written outside the volume by restore or export attempts.
    assert!(!std::path::Path::new("/etc/restored").exists());
}
