//! A fake SSH host that lies (issue 9, "hostile remote"): test code listening on 127.0.0.1 that answers
//! the client with what no honest server sends before keys are agreed: garbage instead of a version
//! line, endless or huge pre-banner lines, the wrong protocol version, absurd packet lengths, a KEXINIT
//! with nothing in common or with a huge name-list, a DISCONNECT carrying terminal escapes, and a real
//! OpenSSH server's own opening bytes mutated at random (bit flips, truncation, length fields, spliced
//! garbage). After key exchange everything is encrypted and authenticated, so a liar there is a MAC
//! failure; the channel-level lies (an `rsync` that lies) are `offsite-rsync`'s hostile tests.
//!
//! Properties, for every case: `connect` fails (never succeeds, never panics) within its timeout plus a
//! little, with an error naming the host and port, and without terminal control characters from the
//! peer in its message.

mod common;

use std::time::{Duration, Instant};

use common::{TestSshd, keygen};
use offsite_ssh::{SshTarget, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(2);

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One binary packet (no MAC, no encryption: before the first key exchange).
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (payload.len() + 5) % 8;
    if pad < 4 {
        pad += 8;
    }
    let len = (payload.len() + pad + 1) as u32;
    let mut p = len.to_be_bytes().to_vec();
    p.push(pad as u8);
    p.extend_from_slice(payload);
    p.extend(std::iter::repeat_n(0u8, pad));
    p
}

fn name_list(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A KEXINIT whose ten name-lists are `lists`.
fn kexinit(lists: [&[u8]; 10]) -> Vec<u8> {
    let mut p = vec![20u8];
    p.extend_from_slice(&[7u8; 16]);
    for l in lists {
        name_list(&mut p, l);
    }
    p.push(0);
    p.extend_from_slice(&0u32.to_be_bytes());
    packet(&p)
}

const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

/// What one fake host sends (then it holds the connection open, reading and dropping what comes).
fn scripted_cases(real: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "nothing but garbage".into(),
            b"\x00\xff garbage \x1b[2J\r\n".repeat(100),
        ),
        (
            "endless lines before a version line".into(),
            b"hello, this is not ssh\r\n".repeat(50_000),
        ),
        ("a 200 KB line without end".into(), vec![b'x'; 200_000]),
        ("SSH version 1".into(), b"SSH-1.5-ancient\r\n".to_vec()),
        (
            "a version line with control characters".into(),
            b"SSH-2.0-evil\x1b]0;owned\x07\x1b[31m\r\n".to_vec(),
        ),
        ("a packet of 4 GiB".into(), {
            let mut v = BANNER.to_vec();
            v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 4, 20]);
            v
        }),
        ("a packet of 1 MiB that never comes".into(), {
            let mut v = BANNER.to_vec();
            v.extend_from_slice(&(1u32 << 20).to_be_bytes());
            v.extend_from_slice(&[4, 20, 1, 2, 3]);
            v
        }),
        ("a packet of length 0".into(), {
            let mut v = BANNER.to_vec();
            v.extend_from_slice(&[0, 0, 0, 0]);
            v.extend_from_slice(&[0u8; 64]);
            v
        }),
        ("padding longer than the packet".into(), {
            let mut v = BANNER.to_vec();
            v.extend_from_slice(&[0, 0, 0, 12, 200]);
            v.extend_from_slice(&[20u8; 11]);
            v
        }),
        ("a KEXINIT with nothing in common".into(), {
            let mut v = BANNER.to_vec();
            v.extend(kexinit([
                b"made-up-kex",
                b"made-up-hostkey",
                b"rot13",
                b"rot13",
                b"crc32",
                b"crc32",
                b"none",
                b"none",
                b"",
                b"",
            ]));
            v
        }),
        ("a KEXINIT with a 2 MB name-list".into(), {
            let mut v = BANNER.to_vec();
            let huge = b"x,".repeat(1 << 20);
            v.extend(kexinit([
                &huge,
                b"ssh-ed25519",
                b"aes128-ctr",
                b"aes128-ctr",
                b"hmac-sha2-256",
                b"hmac-sha2-256",
                b"none",
                b"none",
                b"",
                b"",
            ]));
            v
        }),
        (
            "a KEXINIT whose name-list length runs past the packet".into(),
            {
                let mut v = BANNER.to_vec();
                let mut p = vec![20u8];
                p.extend_from_slice(&[7u8; 16]);
                p.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
                p.extend_from_slice(b"curve25519-sha256");
                v.extend(packet(&p));
                v
            },
        ),
        ("a DISCONNECT with terminal escapes".into(), {
            let mut v = BANNER.to_vec();
            let mut p = vec![1u8];
            p.extend_from_slice(&2u32.to_be_bytes());
            name_list(
                &mut p,
                b"\x1b[2J\x1b]0;pwned\x07go away\r\nFAKE: offsite says your key is fine",
            );
            name_list(&mut p, b"en");
            v.extend(packet(&p));
            v
        }),
        ("an unknown message before KEXINIT, then silence".into(), {
            let mut v = BANNER.to_vec();
            v.extend(packet(&[250, 1, 2, 3]));
            v
        }),
    ];
    // The real server's opening bytes, cut short at several places.
    for cut in [
        5,
        BANNER.len().min(real.len()),
        real.len() / 2,
        real.len().saturating_sub(1),
    ] {
        cases.push((
            format!("a real opening cut at byte {cut}"),
            real[..cut.min(real.len())].to_vec(),
        ));
    }
    cases
}

/// Random mutations of the real server's opening bytes.
fn mutated(real: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = real.to_vec();
    let banner_end = v.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                // A length field of the first packet set to something odd.
                if v.len() >= banner_end + 4 {
                    let l = match rng.below(4) {
                        0 => 0u32,
                        1 => u32::MAX,
                        2 => rng.next() as u32,
                        _ => 35_000,
                    };
                    v[banner_end..banner_end + 4].copy_from_slice(&l.to_be_bytes());
                }
            }
            3 if !v.is_empty() => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            4 => {
                let at = rng.below(v.len() + 1);
                let junk: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
            _ => {
                // A name-list length inside the KEXINIT.
                if v.len() > banner_end + 30 {
                    let at = banner_end + 22 + rng.below(8);
                    let l = rng.next() as u32;
                    v[at..at + 4].copy_from_slice(&l.to_be_bytes());
                }
            }
        }
    }
    v
}

/// What a real sshd sends first (version line, KEXINIT), to our version line.
async fn real_opening(sshd: &TestSshd) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", sshd.port))
        .await
        .unwrap();
    s.write_all(b"SSH-2.0-offsite_test\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    // The version line and one whole packet.
    loop {
        let n = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(2).position(|w| w == b"\r\n") {
            let rest = &got[p + 2..];
            if rest.len() >= 4 {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                if rest.len() >= 4 + len {
                    got.truncate(p + 2 + 4 + len);
                    return got;
                }
            }
        }
        assert!(n > 0 && Instant::now() < deadline, "sshd sent {got:?}");
    }
}

/// Serves `script` to one client, then (with `hold`) keeps the connection open, reading and dropping
/// what the client sends, or closes it.
async fn liar(script: Vec<u8>, hold: bool) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let (mut r, mut w) = s.split();
        let drain = async {
            let mut buf = [0u8; 4096];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let send = async {
            let _ = w.write_all(&script).await;
            if hold {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        };
        tokio::select! {
            _ = drain => {}
            _ = send => {}
        }
    });
    (port, task)
}

async fn check(
    what: &str,
    script: Vec<u8>,
    hold: bool,
    key: &std::path::Path,
    kh: &std::path::Path,
) {
    let (port, task) = liar(script, hold).await;
    let mut target = SshTarget::new("127.0.0.1", "nobody", key, kh).with_port(port);
    target.connect_timeout = TIMEOUT;
    let start = Instant::now();
    let r = tokio::time::timeout(TIMEOUT * 3, connect(&target)).await;
    let took = start.elapsed();
    task.abort();
    let err = match r {
        Err(_) => panic!("{what}: connect hung past its own timeout ({took:?})"),
        Ok(Ok(_)) => panic!("{what}: a lying host was accepted"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "{what}: the error does not name the host: {err}"
    );
    assert!(
        !err.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: the peer's control characters reached the message: {err:?}"
    );
    assert!(took <= TIMEOUT + Duration::from_secs(2), "{what}: {took:?}");
    if hold {
        println!("{what}: {err} ({took:.1?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_host_is_refused_clearly_and_in_time() {
    let sshd = TestSshd::start();
    let real = real_opening(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    keygen(&key, "ed25519", "");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();

    for (what, script) in scripted_cases(&real) {
        check(&what, script, true, &key, &kh).await;
    }
    let cases: usize = std::env::var("OFFSITE_SSH_LIAR_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("OFFSITE_SSH_LIAR_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x55_4c1e);
    println!("lying host: seed {seed}, {cases} mutated openings");
    let mut rng = Rng(seed | 1);
    for i in 0..cases {
        let script = mutated(&real, &mut rng);
        // Mostly the liar hangs up after its lie (a quick failure); one in five holds the line (the
        // connect timeout must end it).
        let hold = rng.below(5) == 0;
        check(
            &format!("mutation {i} (seed {seed})"),
            script,
            hold,
            &key,
            &kh,
        )
        .await;
    }
}

/// What a host that lets the client in then does wrong.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Never answers the channel open (keepalives are answered: the connection looks alive).
    NoChannel,
    /// Opens the channel, never answers the exec request.
    NoExecAnswer,
    /// Refuses the command.
    ExecRefused,
    /// Says the command ran and ended at once, with an odd exit status.
    ExitAtOnce,
    /// Floods stderr (8 MiB), then ends with a signal whose message carries terminal escapes.
    StderrFlood,
    /// Sends output after it said the command ended, and closes twice.
    AfterTheEnd,
}

struct Liar {
    lie: Lie,
    held: Vec<russh::server::ChannelOpenHandle>,
}

impl russh::server::Handler for Liar {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _: &str,
        _: russh::server::PublicKeyOffer<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if matches!(self.lie, Lie::NoChannel) {
            self.held.push(reply);
        } else {
            reply.accept().await;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        _data: &[u8],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        match self.lie {
            Lie::NoChannel | Lie::NoExecAnswer => {}
            Lie::ExecRefused => session.channel_failure(channel)?,
            Lie::ExitAtOnce => {
                session.channel_success(channel)?;
                session.exit_status_request(channel, 0xdead_beef)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
            Lie::StderrFlood => {
                session.channel_success(channel)?;
                let line = vec![b'e'; 64 * 1024];
                for _ in 0..128 {
                    session.extended_data(channel, 1, line.clone())?;
                }
                session.exit_signal_request(
                    channel,
                    russh::Sig::Custom("\x1b[2JEVIL".into()),
                    true,
                    "\x1b]0;pwned\x07 core dumped",
                    "en",
                )?;
                session.eof(channel)?;
                session.close(channel)?;
            }
            Lie::AfterTheEnd => {
                session.channel_success(channel)?;
                session.data(channel, b"before".to_vec())?;
                session.exit_status_request(channel, 3)?;
                session.eof(channel)?;
                session.data(channel, b"after the end".to_vec())?;
                session.exit_status_request(channel, 0)?;
                session.close(channel)?;
                let _ = session.close(channel);
            }
        }
        Ok(())
    }
}

/// A host that logs the client in (with a host key the client trusts), then lies at the channel level.
/// Every lie ends in an error or a plain result within bounds: nothing hangs (the channel open and the
/// command's start are bounded by the connect timeout), stderr stays within its limit, and no control
/// character of the peer's reaches a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lies_after_login_cannot_hang_or_flood_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host");
    keygen(&host_key, "ed25519", "");
    let client_key = dir.path().join("client");
    keygen(&client_key, "ed25519", "");
    let key = russh::keys::load_secret_key(&host_key, None).unwrap();
    let pubkey = std::fs::read_to_string(dir.path().join("host.pub")).unwrap();
    let config = std::sync::Arc::new(russh::server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(10),
        ..Default::default()
    });
    for lie in [
        Lie::NoChannel,
        Lie::NoExecAnswer,
        Lie::ExecRefused,
        Lie::ExitAtOnce,
        Lie::StderrFlood,
        Lie::AfterTheEnd,
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let kh = dir.path().join(format!("kh-{port}"));
        std::fs::write(&kh, format!("[127.0.0.1]:{port} {pubkey}")).unwrap();
        let cfg = config.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let running = russh::server::run_stream(
                cfg,
                s,
                Liar {
                    lie,
                    held: Vec::new(),
                },
            )
            .await
            .unwrap();
            let _ = running.await;
        });
        let mut target = SshTarget::new("127.0.0.1", "nobody", &client_key, &kh).with_port(port);
        target.connect_timeout = TIMEOUT;
        target.stderr_limit = 4096;
        let start = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            let conn = connect(&target).await.map_err(|e| e.to_string())?;
            let mut p = conn
                .exec("rsync --server")
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            if let Some(mut stdout) = p.take_stdout() {
                let _ = stdout.read_to_end(&mut out).await;
            }
            let status = p.wait().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((out, status, p.stderr().contents_lossy()))
        })
        .await
        .unwrap_or_else(|_| panic!("{lie:?}: the client hung"));
        let took = start.elapsed();
        server.abort();
        match (lie, outcome) {
            (Lie::NoChannel | Lie::NoExecAnswer, Err(e)) => {
                assert!(e.contains("no answer from the server"), "{lie:?}: {e}");
                assert!(took < TIMEOUT * 3, "{lie:?}: {took:?}");
            }
            (Lie::ExecRefused, Err(e)) => assert!(e.contains("refused"), "{lie:?}: {e}"),
            (_, Err(e)) => {
                assert!(
                    !e.chars().any(|c| c.is_control() && c != '\n'),
                    "{lie:?}: {e:?}"
                )
            }
            (Lie::NoChannel | Lie::NoExecAnswer | Lie::ExecRefused, Ok(r)) => {
                panic!("{lie:?}: accepted: {:?}", r.1)
            }
            (_, Ok((out, status, stderr))) => {
                assert!(
                    stderr.len() <= 4096 + 256,
                    "{lie:?}: stderr kept {} bytes",
                    stderr.len()
                );
                if let offsite_ssh::ExitStatus::Signal {
                    signal, message, ..
                } = &status
                {
                    assert!(
                        !signal.chars().chain(message.chars()).any(char::is_control),
                        "{lie:?}: the peer's control characters are in {status:?}"
                    );
                }
                let shown = format!("{status:?} {stderr}");
                println!(
                    "{lie:?}: {} bytes out, {}",
                    out.len(),
                    &shown[..shown.len().min(200)]
                );
            }
        }
    }
}
