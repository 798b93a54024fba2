//! `offsite rsync` through a real OpenSSH server and the real rsync on 127.0.0.1.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testpeers::TestSshd;

// The server-side failure helpers (tmpfs mounts with a Drop guard, rsync as
// `nobody`), shared with the rsync-wire tests.
#[path = "../../rsync-wire/tests/common/peerfs.rs"]
#[allow(dead_code)]
mod peerfs;

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
        self.command(key, args).output().expect("run offsite")
    }

    fn command(&self, key: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_offsite"));
        c.arg("rsync")
            .args(["--port", &self.sshd.port.to_string()])
            .args(["--identity", key.to_str().unwrap()])
            .args(["--known-hosts", self.sshd.known_hosts.to_str().unwrap()])
            .args(args);
        c
    }

    /// Like [`run`](Self::run), but fails the test instead of hanging when
    /// `offsite` has not exited after `limit` (it is then killed by pid).
    fn run_limited(&self, limit: Duration, args: &[&str]) -> Output {
        let out = tempfile::tempdir().unwrap();
        let (so, se) = (out.path().join("stdout"), out.path().join("stderr"));
        let mut child = self
            .command(&self.sshd.client_key, args)
            .stdout(std::fs::File::create(&so).unwrap())
            .stderr(std::fs::File::create(&se).unwrap())
            .spawn()
            .expect("run offsite");
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "offsite rsync {args:?} did not finish within {limit:?}; stderr: {}",
                    std::fs::read_to_string(&se).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: std::fs::read(&so).unwrap(),
            stderr: std::fs::read(&se).unwrap(),
        }
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

fn failed(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
    eprintln!("{err}");
    err
}

/// The remote rsync runs as `nobody` (root would bypass the permission
/// bits): pushing into a root-owned 0755 directory fails and `offsite`
/// prints the server's own "Permission denied"; nothing is written.
#[test]
fn push_permission_denied_over_ssh_prints_servers_message() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let Some(wrapper) = peerfs::rsync_as_nobody(d.path()) else {
        return;
    };
    let src = d.path().join("src");
    make_tree(&src);
    let locked = d.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("existing"), "untouched").unwrap();
    peerfs::open_path_for_others(d.path(), &locked);

    for dest in [locked.clone(), locked.join("new")] {
        let o = peer.run_limited(
            Duration::from_secs(120),
            &[
                "--rsync-path",
                wrapper.to_str().unwrap(),
                &format!("{}/", src.display()),
                &peer.remote(&dest),
            ],
        );
        let err = failed(&o);
        assert!(err.contains("Permission denied"), "{err}");
    }
    let names: Vec<_> = std::fs::read_dir(&locked)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["existing"]);
    assert_eq!(
        std::fs::read(locked.join("existing")).unwrap(),
        b"untouched"
    );
}

/// The remote file system fills up during a push: `offsite` exits 1 with the
/// server's "No space left on device" (it does not hang), the files already
/// on the destination are intact with no temporary file left behind, and a
/// push that fits completes afterwards.
#[test]
fn push_disk_full_over_ssh_prints_servers_message() {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("keep.txt"), "keep me\n").unwrap();
    let old: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(src.join("old.bin"), &old).unwrap();
    let Some(mnt) = peerfs::Tmpfs::mount(&d.path().join("small"), "1m") else {
        return;
    };
    let remote = mnt.path.join("remote");
    let src_arg = format!("{}/", src.display());
    ok(&peer.run(&[&src_arg, &peer.remote(&remote)]));
    same_tree(&src, &remote);
    let keep_before = std::fs::read(remote.join("keep.txt")).unwrap();

    // 3 MB cannot fit in what is left of 1 MiB.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 7) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let o = peer.run_limited(Duration::from_secs(120), &[&src_arg, &peer.remote(&remote)]);
    let err = failed(&o);
    assert!(err.contains("No space left on device"), "{err}");
    let mut names: Vec<_> = std::fs::read_dir(&remote)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keep.txt", "old.bin"], "left over on the remote");
    assert_eq!(std::fs::read(remote.join("keep.txt")).unwrap(), keep_before);
    assert_eq!(std::fs::read(remote.join("old.bin")).unwrap(), old);

    std::fs::remove_file(src.join("big.bin")).unwrap();
    ok(&peer.run(&[&src_arg, &peer.remote(&remote)]));
    same_tree(&src, &remote);
    drop(mnt);
}

/// `sha256sum` of each file (coreutils: independent of our code; streaming),
/// the files hashed concurrently.
fn sha256(paths: &[&Path]) -> Vec<String> {
    let children: Vec<_> = paths
        .iter()
        .map(|p| {
            Command::new("sha256sum")
                .arg(p)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A 3 GiB sparse file (1 MiB non-zero regions at the start, past 1 GiB,
/// straddling 2 GiB where 32-bit offsets overflow, and at the end) pushed
/// through `offsite rsync` over SSH arrives with the same size, mtime and
/// SHA-256. Prints how long the push took.
#[test]
fn push_3gib_sparse_file_over_ssh() {
    use std::io::{Seek, SeekFrom, Write};
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let size: u64 = 3 << 30;
    let path = src.join("disk.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let region: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8 | 1)
        .collect();
    for at in [0, (1 << 30) + 12_345, (2 << 30) - 500_000, size - 300_000] {
        f.seek(SeekFrom::Start(at)).unwrap();
        let n = region.len().min((size - at) as usize);
        f.write_all(&region[..n]).unwrap();
    }
    drop(f);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

    let remote = d.path().join("remote");
    let started = Instant::now();
    let o = peer.run_limited(
        Duration::from_secs(1200),
        &[
            "--stats",
            &format!("{}/", src.display()),
            &peer.remote(&remote),
        ],
    );
    let stats = ok(&o);
    eprintln!("3 GiB sparse push over ssh: {:?}", started.elapsed());
    assert_eq!(literal(&stats), size, "{stats}");
    let got = remote.join("disk.img");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), size);
    let sums = sha256(&[&got, &path]);
    assert_eq!(sums[0], sums[1]);
    assert_eq!(
        std::fs::metadata(&got).unwrap().mtime(),
        std::fs::metadata(&path).unwrap().mtime()
    );
}

/// Push with changes and pull with the server forced down to `protocol`
/// by a `--rsync-path` wrapper that also records the first bytes the server
/// writes: its version, as an int32 LE, proves which protocol was spoken.
fn push_and_pull_at_server_protocol(protocol: u32) {
    let peer = Peer::start();
    let d = tempfile::tempdir().unwrap();
    let wrapper = d.path().join("rsync-forced");
    let record = d.path().join("server-output.bin");
    // Process substitution needs bash.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nexec rsync --protocol={protocol} \"$@\" > >(tee -a '{}')\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rsync_path = wrapper.to_str().unwrap();
    let version = |record: &Path| {
        let b = std::fs::read(record).unwrap();
        assert!(b.len() >= 4, "nothing recorded");
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };

    let src = d.path().join("src");
    let remote = d.path().join("remote");
    make_tree(&src);
    let src_arg = format!("{}/", src.display());
    ok(&peer.run(&["--rsync-path", rsync_path, &src_arg, &peer.remote(&remote)]));
    assert_eq!(version(&record), protocol);
    same_tree(&src, &remote);

    // Changes: an edit and an insertion in the big file, a new file, a
    // removed file (--delete), a changed symlink.
    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[1_000_000] ^= 0x55;
    big.splice(2_500_000..2_500_000, *b"inserted");
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("a/new.txt"), "new\n").unwrap();
    std::fs::remove_file(src.join("empty")).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("a/new.txt", src.join("link")).unwrap();
    std::fs::remove_file(&record).unwrap();
    let stats = ok(&peer.run(&[
        "--rsync-path",
        rsync_path,
        "--delete",
        "--stats",
        &src_arg,
        &peer.remote(&remote),
    ]));
    assert_eq!(version(&record), protocol);
    same_tree(&src, &remote);
    assert!(literal(&stats) < 40_000, "literal {}", literal(&stats));

    // Pull the tree back, then a change on the remote side.
    let local = d.path().join("local");
    std::fs::remove_file(&record).unwrap();
    ok(&peer.run(&[
        "--rsync-path",
        rsync_path,
        &format!("{}/", peer.remote(&remote)),
        local.to_str().unwrap(),
    ]));
    assert_eq!(version(&record), protocol);
    same_tree(&remote, &local);
    let mut big = std::fs::read(remote.join("big.bin")).unwrap();
    big.truncate(3_000_000);
    big.extend_from_slice(b"new tail");
    std::fs::write(remote.join("big.bin"), &big).unwrap();
    std::fs::write(remote.join("a/b/remote-only"), "r\n").unwrap();
    let stats = ok(&peer.run(&[
        "--rsync-path",
        rsync_path,
        "--stats",
        &format!("{}/", peer.remote(&remote)),
        local.to_str().unwrap(),
    ]));
    same_tree(&remote, &local);
    assert!(literal(&stats) < 40_000, "literal {}", literal(&stats));
}

#[test]
fn push_and_pull_with_server_at_protocol_27_over_ssh() {
    push_and_pull_at_server_protocol(27);
}

#[test]
fn push_and_pull_with_server_at_protocol_30_over_ssh() {
    push_and_pull_at_server_protocol(30);
}
