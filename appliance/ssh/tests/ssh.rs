//! Integration tests against a real OpenSSH server on 127.0.0.1 (see `common`).

mod common;

use std::time::Duration;

use common::{TestSshd, keygen, read_pub, ssh_keygen_fingerprint};
use offsite_ssh::{
    ExitStatus, HostKeyStatus, SshError, append_known_host, connect, fetch_host_key,
    generate_ed25519_keypair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Run `cmd`, feeding `input`, and return (stdout, stderr, status).
async fn run(
    conn: &offsite_ssh::SshConnection,
    cmd: &str,
    input: &[u8],
) -> (Vec<u8>, String, ExitStatus) {
    let mut p = conn.exec(cmd).await.unwrap();
    let mut stdout = p.take_stdout().unwrap();
    let mut stdin = p.take_stdin().unwrap();
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap();
    let status = p.wait().await.unwrap();
    (out, p.stderr().contents_lossy(), status)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible, reproducible.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    assert_eq!(conn.host_key().fingerprint, sshd.host_fingerprint());
    let (out, err, status) = run(&conn, "echo hello", b"").await;
    assert_eq!(out, b"hello\n");
    assert_eq!(err, "");
    assert_eq!(status, ExitStatus::Code(0));
    assert!(status.success());
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_10_mib_concurrently_byte_identical() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let data = pattern(10 * 1024 * 1024, 42);
    let mut p = conn.exec("cat").await.unwrap();
    let mut stdin = p.take_stdin().unwrap();
    let mut stdout = p.take_stdout().unwrap();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        // Odd-sized writes, so chunking is exercised.
        for chunk in to_send.chunks(100_003) {
            stdin.write_all(chunk).await.unwrap();
        }
        stdin.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(10 * 1024 * 1024);
        stdout.read_to_end(&mut got).await.unwrap();
        got
    });
    let got = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("cat round trip hung")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data differs");
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_signal_propagate() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let (_, _, status) = run(&conn, "exit 3", b"").await;
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(status.code(), Some(3));
    assert!(!status.success());
    let (_, _, status) = run(&conn, "kill -TERM $$", b"").await;
    match status {
        ExitStatus::Signal { signal, .. } => assert_eq!(signal, "TERM"),
        other => panic!("expected a signal, got {other:?}"),
    }
    // Closing the channel of a running command returns promptly and leaves the connection
    // usable. (Signals can be sent, but OpenSSH refuses them for root sessions, "session
    // signalling requires privilege separation", and tests run as root: only check sending.)
    let p = conn.exec("exec sleep 30").await.unwrap();
    p.signal(offsite_ssh::Sig::TERM).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), p.close())
        .await
        .expect("close() hung")
        .unwrap();
    assert_eq!(run(&conn, "echo still-up", b"").await.0, b"still-up\n");
    // wait() without taking the halves: stdin is closed, stdout discarded.
    let mut p = conn.exec("cat; exit 7").await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(7));
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_captured_and_bounded() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let (out, err, status) = run(&conn, "echo out; echo oops >&2; exit 1", b"").await;
    assert_eq!(out, b"out\n");
    assert_eq!(err, "oops\n");
    assert_eq!(status, ExitStatus::Code(1));

    let mut p = conn
        .exec("head -c 200000 /dev/zero | tr '\\0' x >&2; echo END >&2")
        .await
        .unwrap();
    assert!(p.wait().await.unwrap().success());
    let cap = p.stderr();
    assert_eq!(cap.total_bytes(), 200_004);
    assert!(cap.truncated());
    let kept = cap.contents();
    assert_eq!(kept.len(), offsite_ssh::DEFAULT_STDERR_LIMIT);
    assert!(kept.ends_with(b"xxEND\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_reports_fingerprint_and_can_be_trusted() {
    let sshd = TestSshd::start();
    let mut target = sshd.target();
    target.known_hosts_file = sshd.path("empty_known_hosts");
    let err = connect(&target).await.unwrap_err();
    let expected = sshd.host_fingerprint();
    match &err {
        SshError::UnknownHostKey { info, .. } => {
            assert_eq!(info.fingerprint, expected);
            assert_eq!(info.key_type, "ssh-ed25519");
            let key_b64 = read_pub(&sshd.host_key)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string();
            assert_eq!(
                info.known_hosts_line,
                format!("[127.0.0.1]:{} ssh-ed25519 {key_b64}", sshd.port)
            );
        }
        other => panic!("expected UnknownHostKey, got {other:?}"),
    }
    assert!(err.is_host_key_error());
    assert!(err.to_string().contains(&expected), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", sshd.port))
    );

    // The "test connection / trust this host" flow.
    let (info, status) = fetch_host_key(&target).await.unwrap();
    assert_eq!(info.fingerprint, expected);
    assert_eq!(
        status,
        HostKeyStatus::Unknown {
            other_types: vec![]
        }
    );
    append_known_host(
        &target.known_hosts_file,
        &target.host,
        target.port,
        &info.key,
        true,
    )
    .unwrap();
    let (_, status) = fetch_host_key(&target).await.unwrap();
    assert!(matches!(status, HostKeyStatus::Trusted { line: 1 }));
    let conn = connect(&target).await.unwrap();
    let (out, _, _) = run(&conn, "echo trusted", b"").await;
    assert_eq!(out, b"trusted\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    let sshd = TestSshd::start();
    let other = sshd.path("otherhost");
    keygen(&other, "ed25519", "");
    let other_line = read_pub(&other);
    let mut fields = other_line.split_whitespace();
    let (t, b) = (fields.next().unwrap(), fields.next().unwrap());
    let kh = sshd.path("changed_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "# a comment\n@cert-authority *.example ssh-ed25519 {b}\n\
             other.example {t} {b}\n[127.0.0.1]:{} {t} {b} old key\n",
            sshd.port
        ),
    )
    .unwrap();
    let mut target = sshd.target();
    target.known_hosts_file = kh.clone();
    let err = connect(&target).await.unwrap_err();
    match &err {
        SshError::HostKeyChanged {
            info,
            line,
            expected_fingerprint,
            ..
        } => {
            assert_eq!(info.fingerprint, sshd.host_fingerprint());
            assert_eq!(*line, 4);
            let mut p = other.as_os_str().to_owned();
            p.push(".pub");
            assert_eq!(
                *expected_fingerprint,
                ssh_keygen_fingerprint(std::path::Path::new(&p))
            );
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    assert!(err.to_string().contains("CHANGED"), "{err}");
    // fetch_host_key reports it too, without connecting further.
    let (_, status) = fetch_host_key(&target).await.unwrap();
    assert!(matches!(status, HostKeyStatus::Changed { line: 4, .. }));

    // A revoked key is refused even if also listed as trusted.
    let real = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let real_key = real.split_once(' ').unwrap().1;
    std::fs::write(&kh, format!("@revoked * {real_key}{real}")).unwrap();
    let err = connect(&target).await.unwrap_err();
    assert!(
        matches!(err, SshError::HostKeyRevoked { line: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_key_is_an_auth_error() {
    let sshd = TestSshd::start();
    let stranger = sshd.path("stranger");
    keygen(&stranger, "ed25519", "");
    let mut target = sshd.target();
    target.identity_file = stranger;
    let err = connect(&target).await.unwrap_err();
    match &err {
        SshError::AuthFailed { user, .. } => assert_eq!(*user, sshd.user),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_client_key_works() {
    let sshd = TestSshd::start();
    let rsa = sshd.path("rsakey");
    keygen(&rsa, "rsa", "");
    sshd.authorize(&read_pub(&rsa));
    let mut target = sshd.target();
    target.identity_file = rsa;
    let conn = connect(&target).await.unwrap();
    let (out, _, status) = run(&conn, "echo rsa", b"").await;
    assert_eq!(out, b"rsa\n");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_identity() {
    let sshd = TestSshd::start();
    let enc = sshd.path("enckey");
    keygen(&enc, "ed25519", "s3cret");
    sshd.authorize(&read_pub(&enc));
    let mut target = sshd.target();
    target.identity_file = enc;
    let err = connect(&target).await.unwrap_err();
    assert!(
        matches!(
            err,
            SshError::IdentityEncrypted {
                passphrase_given: false,
                ..
            }
        ),
        "{err:?}"
    );
    target.identity_passphrase = Some("wrong".into());
    let err = connect(&target).await.unwrap_err();
    assert!(
        matches!(
            err,
            SshError::IdentityEncrypted {
                passphrase_given: true,
                ..
            }
        ),
        "{err:?}"
    );
    target.identity_passphrase = Some("s3cret".into());
    let conn = connect(&target).await.unwrap();
    assert_eq!(run(&conn, "echo ok", b"").await.0, b"ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exec_channels_at_once() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let a = pattern(2 * 1024 * 1024, 1);
    let b = pattern(3 * 1024 * 1024, 2);
    // Both are open (and streaming) at the same time on one connection.
    let ((out_a, _, sa), (out_b, _, sb)) =
        tokio::join!(run(&conn, "cat", &a), run(&conn, "cat", &b));
    assert!(out_a == a && out_b == b);
    assert!(sa.success() && sb.success());
    // A command blocked on its stdin does not hold up another one on the same connection.
    let mut blocked = conn.exec("read -r x; echo got:$x").await.unwrap();
    let (out, _, _) = run(&conn, "echo quick", b"").await;
    assert_eq!(out, b"quick\n");
    let mut stdin = blocked.take_stdin().unwrap();
    stdin.write_all(b"late\n").await.unwrap();
    let mut stdout = blocked.take_stdout().unwrap();
    let mut got = String::new();
    stdout.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "got:late\n");
    assert!(blocked.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_runs() {
    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let (out, _, _) = run(
        &conn,
        &format!("printf '%s|' {}", offsite_ssh::shell_quote("a 'b' $c;d")),
        b"",
    )
    .await;
    assert_eq!(out, b"a 'b' $c;d|");
    let (out, _, status) = run(&conn, "rsync --version", b"").await;
    let text = String::from_utf8_lossy(&out);
    assert!(status.success());
    assert!(
        text.contains("rsync") && text.contains("protocol version"),
        "{text}"
    );

    // A real `rsync --server` starts and sends its protocol version greeting.
    let mut p = conn
        .exec(&format!(
            "rsync --server -vlogDtpre.iLsfxCIvu . {}",
            sshd.path("dst").display()
        ))
        .await
        .unwrap();
    let mut stdout = p.take_stdout().unwrap();
    let mut greeting = [0u8; 4];
    stdout.read_exact(&mut greeting).await.unwrap();
    let proto = u32::from_le_bytes(greeting);
    assert!((27..=40).contains(&proto), "protocol {proto}");
    p.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_key_with_forced_command() {
    let sshd = TestSshd::start();
    let key = sshd.path("restricted");
    keygen(&key, "ed25519", "");
    sshd.authorize(&format!(
        "command=\"echo forced:$SSH_ORIGINAL_COMMAND\",no-pty,no-agent-forwarding,no-port-forwarding {}",
        read_pub(&key)
    ));
    let mut target = sshd.target();
    target.identity_file = key;
    let conn = connect(&target).await.unwrap();
    let (out, _, status) = run(&conn, "rsync --server --version", b"").await;
    assert_eq!(out, b"forced:rsync --server --version\n");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_key_is_valid_and_never_overwritten() {
    let sshd = TestSshd::start();
    let path = sshd.path("appliance_key");
    let key = generate_ed25519_keypair(&path, "offsite@test").unwrap();
    assert!(key.authorized_keys_line.starts_with("ssh-ed25519 AAAA"));
    assert!(key.authorized_keys_line.ends_with(" offsite@test"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // ssh-keygen accepts the private key and derives the same public key.
    let out = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let derived = String::from_utf8(out.stdout).unwrap();
    assert!(
        key.authorized_keys_line.starts_with(
            derived
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .as_str()
        )
    );
    assert_eq!(
        key.fingerprint,
        ssh_keygen_fingerprint(&key.public_key_path)
    );

    let before = std::fs::read(&path).unwrap();
    let err = generate_ed25519_keypair(&path, "again").unwrap_err();
    assert!(matches!(err, SshError::KeyGen { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    sshd.authorize(&key.authorized_keys_line);
    let mut target = sshd.target();
    target.identity_file = path;
    let conn = connect(&target).await.unwrap();
    assert_eq!(run(&conn, "echo gen", b"").await.0, b"gen\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_on_silent_peer() {
    // A local listener that accepts and never speaks SSH.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (_sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    keygen(&key, "ed25519", "");
    let mut target =
        offsite_ssh::SshTarget::new("127.0.0.1", "nobody", &key, dir.path().join("kh"))
            .with_port(port);
    target.connect_timeout = Duration::from_millis(700);
    let start = std::time::Instant::now();
    let err = connect(&target).await.unwrap_err();
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_detected_by_keepalive() {
    let sshd = TestSshd::start();
    let mut target = sshd.target();
    target.keepalive_interval = Some(Duration::from_millis(500));
    target.keepalive_max = 2;
    let conn = connect(&target).await.unwrap();
    let mut p = conn.exec("sleep 60").await.unwrap();
    let mut stdout = p.take_stdout().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Freeze the server side of this connection (our own sshd's children only).
    let frozen = sshd.descendants();
    assert!(!frozen.is_empty());
    for pid in &frozen {
        std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
    }
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_to_end(&mut buf))
        .await
        .expect("stdout read hung on a dead peer");
    assert!(read.is_err(), "expected an error, got {read:?}");
    let err = tokio::time::timeout(Duration::from_secs(5), p.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err:?}");
    assert!(err.to_string().contains("keepalive"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(conn.is_closed());
    for pid in &frozen {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
    }
}

/// A whole real rsync transfer: the local `rsync` client's remote shell is a small script that
/// relays its stdio through two FIFOs, which this test bridges to an exec channel running the
/// `rsync --server` command line the client asked for. Exercises concurrent read/write with
/// the real protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_rsync_transfer_through_channel() {
    use tokio::net::unix::pipe;

    let sshd = TestSshd::start();
    let conn = connect(&sshd.target()).await.unwrap();
    let src = sshd.path("src");
    let dst = sshd.path("dst");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("big.bin"), pattern(5 * 1024 * 1024, 9)).unwrap();
    for i in 0..50 {
        std::fs::write(
            src.join(format!("sub/f{i}.txt")),
            format!("file {i}\n").repeat(i * 10),
        )
        .unwrap();
    }
    std::fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();

    let (up, down, argv) = (sshd.path("up"), sshd.path("down"), sshd.path("argv"));
    for fifo in [&up, &down] {
        assert!(
            std::process::Command::new("mkfifo")
                .arg(fifo)
                .status()
                .unwrap()
                .success()
        );
    }
    let rsh = sshd.path("rsh.sh");
    std::fs::write(
        &rsh,
        format!(
            // Like ssh, exit when the remote side's output ends (rsync waits for that).
            "#!/bin/sh\nshift\nprintf '%s\\n' \"$*\" > {a}.tmp && mv {a}.tmp {a}\n\
             exec 3<&0\ncat <&3 > {up} &\nup=$!\ncat {down}\nkill $up 2>/dev/null\nexit 0\n",
            a = argv.display(),
            down = down.display(),
            up = up.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut client = tokio::process::Command::new("rsync")
        .arg("-a")
        .arg(format!("--rsh={}", rsh.display()))
        .arg(format!("{}/", src.display()))
        .arg(format!("relay:{}/", dst.display()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !argv.exists() {
        assert!(std::time::Instant::now() < deadline, "rsh script never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let command = std::fs::read_to_string(&argv).unwrap().trim().to_string();
    assert!(command.starts_with("rsync --server"), "{command}");

    let mut process = conn.exec(&command).await.unwrap();
    let mut stdin = process.take_stdin().unwrap();
    let mut stdout = process.take_stdout().unwrap();
    // Blocking opens: each returns once the script has opened the other end, so the reader
    // cannot see a premature EOF from a FIFO that has no writer yet.
    let (from_client, to_client) = tokio::join!(
        tokio::task::spawn_blocking(move || std::fs::File::open(up).unwrap()),
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().write(true).open(down).unwrap()
        }),
    );
    let mut from_client = pipe::Receiver::from_file(from_client.unwrap()).unwrap();
    let mut to_client = pipe::Sender::from_file(to_client.unwrap()).unwrap();
    let upstream = tokio::spawn(async move {
        // The remote may exit first (then writes fail): not an error of the transfer.
        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
        let _ = stdin.shutdown().await;
    });
    let downstream = tokio::spawn(async move {
        tokio::io::copy(&mut stdout, &mut to_client).await.unwrap();
    });
    let status = tokio::time::timeout(Duration::from_secs(120), client.wait())
        .await
        .expect("rsync transfer hung")
        .unwrap();
    assert!(status.success(), "local rsync failed: {status}");
    upstream.await.unwrap();
    downstream.await.unwrap();
    let remote = process.wait().await.unwrap();
    assert!(
        remote.success(),
        "remote rsync: {remote}: {}",
        process.stderr().contents_lossy()
    );
    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(diff.success(), "trees differ");
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap(),
        std::path::Path::new("big.bin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_known_by_another_key_type_is_used() {
    let sshd = TestSshd::start_with(&["rsa"], "");
    // known_hosts lists only the server's RSA key: the client must ask for that type first
    // (as OpenSSH does) instead of failing on the ed25519 key it would otherwise prefer.
    let rsa_pub = read_pub(&sshd.path("hostkey_rsa"));
    let mut fields = rsa_pub.split_whitespace();
    let (t, b) = (fields.next().unwrap(), fields.next().unwrap());
    let kh = sshd.path("rsa_known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {t} {b}\n", sshd.port)).unwrap();
    let mut target = sshd.target();
    target.known_hosts_file = kh;
    let conn = connect(&target).await.unwrap();
    assert_eq!(conn.host_key().key_type, "ssh-rsa");
    let mut p = sshd.path("hostkey_rsa").into_os_string();
    p.push(".pub");
    assert_eq!(
        conn.host_key().fingerprint,
        ssh_keygen_fingerprint(std::path::Path::new(&p))
    );
    assert_eq!(
        run(&conn, "echo via-rsa-hostkey", b"").await.0,
        b"via-rsa-hostkey\n"
    );

    // Unknown to an empty file: the default preference (ed25519) is reported.
    target.known_hosts_file = sshd.path("none");
    let err = connect(&target).await.unwrap_err();
    assert_eq!(err.host_key_info().unwrap().key_type, "ssh-ed25519");
}
