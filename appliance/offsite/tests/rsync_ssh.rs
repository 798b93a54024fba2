//! `offsite rsync` through a real OpenSSH server and the real rsync on 127.0.0.1.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use testpeers::TestSshd;

struct Peer {
    sshd: TestSshd,
}

impl Peer {
    fn start() -> Peer {
        Peer {
            sshd: TestSshd::start(),
        }
    }

    fn remote(&self, path: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.sshd.user, path.display())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_key(&self.sshd.client_key, args)
    }

    fn run_with_key(&self, key: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_offsite"))
            .arg("rsync")
            .args(["--port", &self.sshd.port.to_string()])
            .args(["--identity", key.to_str().unwrap()])
            .args(["--known-hosts", self.sshd.known_hosts.to_str().unwrap()])
            .args(args)
            .output()
            .expect("run offsite")
    }
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "exit {:?}: {err}", o.status.code());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn literal(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix("Literal data: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("literal line")
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), "deep\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    std::fs::write(root.join("it's \"quoted\" & spaced"), "q\n").unwrap();
    std::fs::write(root.join("line\nbreak"), "n\n").unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        "l\n",
    )
    .unwrap();
    std::fs::write(root.join("x".repeat(255)), "long name\n").unwrap();
    let big: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn push_changes_delete_and_link_dest_over_ssh() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let remote = d.path().join("remote");
    make_tree(&src);

    let stats = ok(&peer.run(&[
        "--stats",
        &format!("{}/", src.display()),
        &peer.remote(&remote),
    ]));
    same_tree(&src, &remote);
    assert!(literal(&stats) >= 4_000_000);

    // A small edit in the big file: the delta sends little.
    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[2_000_123] ^= 0xff;
    big.insert(3_000_001, b'!');
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let stats = ok(&peer.run(&[
        "--stats",
        &format!("{}/", src.display()),
        &peer.remote(&remote),
    ]));
    same_tree(&src, &remote);
    assert!(literal(&stats) < 20_000, "literal {}", literal(&stats));

    // --delete.
    std::fs::remove_file(src.join("empty")).unwrap();
    ok(&peer.run(&[
        "--delete",
        &format!("{}/", src.display()),
        &peer.remote(&remote),
    ]));
    assert!(!remote.join("empty").exists());
    same_tree(&src, &remote);

    // --link-dest: unchanged files are hard links to the previous copy.
    let next = d.path().join("next");
    ok(&peer.run(&[
        "--link-dest",
        "../remote",
        &format!("{}/", src.display()),
        &peer.remote(&next),
    ]));
    let a = std::fs::metadata(remote.join("big.bin")).unwrap();
    let b = std::fs::metadata(next.join("big.bin")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn pull_tree_one_file_and_list_over_ssh() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let remote = d.path().join("remote");
    make_tree(&remote);

    let local = d.path().join("local");
    ok(&peer.run(&[
        &format!("{}/", peer.remote(&remote)),
        local.to_str().unwrap(),
    ]));
    same_tree(&remote, &local);

    // A change on the remote: the pull uses the local copy as basis.
    let mut big = std::fs::read(remote.join("big.bin")).unwrap();
    big.truncate(3_900_000);
    big.extend_from_slice(b"tail");
    std::fs::write(remote.join("big.bin"), &big).unwrap();
    let stats = ok(&peer.run(&[
        "--stats",
        &format!("{}/", peer.remote(&remote)),
        local.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(local.join("big.bin")).unwrap(), big);
    assert!(literal(&stats) < 20_000, "literal {}", literal(&stats));

    // One file.
    let one = d.path().join("one");
    ok(&peer.run(&[
        &peer.remote(&remote.join("a/b/c/deep.txt")),
        &format!("{}/", one.display()),
    ]));
    assert_eq!(std::fs::read(one.join("deep.txt")).unwrap(), b"deep\n");

    // List.
    let listing = ok(&peer.run(&["--list-only", &format!("{}/", peer.remote(&remote))]));
    assert!(listing.contains("a/b/c/deep.txt"), "{listing}");
    assert!(listing.contains("link -> a/b/c/deep.txt"), "{listing}");
}

#[test]
fn host_key_problems_are_refused_with_the_fingerprint() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let empty_known = d.path().join("known_hosts");
    std::fs::write(&empty_known, "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_offsite"))
        .args(["rsync", "--port", &peer.sshd.port.to_string()])
        .args(["--identity", peer.sshd.client_key.to_str().unwrap()])
        .args(["--known-hosts", empty_known.to_str().unwrap()])
        .arg(d.path())
        .arg(peer.remote(&d.path().join("dst")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&peer.sshd.host_fingerprint()), "{err}");
    assert!(!d.path().join("dst").exists());
}

#[test]
fn restricted_rrsync_key_can_push_but_not_escape() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let jail = d.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let key = d.path().join("restricted");
    testpeers::keygen(&key, "ed25519", "");
    peer.sshd.authorize(&format!(
        "command=\"/usr/bin/rrsync -wo {}\",no-pty,no-agent-forwarding,no-port-forwarding {}",
        jail.display(),
        testpeers::read_pub(&key)
    ));
    let src = d.path().join("src");
    make_tree(&src);
    let user = &peer.sshd.user;
    ok(&peer.run_with_key(
        &key,
        &[
            &format!("{}/", src.display()),
            &format!("{user}@127.0.0.1:snap1"),
        ],
    ));
    same_tree(&src, &jail.join("snap1"));

    // Outside the jail: refused by rrsync, nothing written.
    let outside = d.path().join("outside");
    let o = peer.run_with_key(
        &key,
        &[
            &format!("{}/", src.display()),
            &format!("{user}@127.0.0.1:../outside"),
        ],
    );
    assert!(!o.status.success());
    assert!(!outside.exists());
    // Write-only: reading back is refused.
    let back = d.path().join("back");
    let o = peer.run_with_key(
        &key,
        &[&format!("{user}@127.0.0.1:snap1/"), back.to_str().unwrap()],
    );
    assert!(!o.status.success());
}

#[test]
fn remote_errors_carry_the_servers_message() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let o = peer.run(&[
        &peer.remote(&d.path().join("does-not-exist")),
        d.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does-not-exist"), "{err}");
}
