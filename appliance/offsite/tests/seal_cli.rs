//! The seal commands as a user runs them: real binary, real files, exit codes and messages.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn offsite(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offsite"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn offsite");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(data) = input {
            let _ = pipe.write_all(&data);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn keygen(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let key = dir.join("master.key");
    let mut args = vec!["keygen", "--key", s(&key)];
    args.extend_from_slice(extra);
    let o = offsite(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    key
}

#[test]
fn keygen_is_private_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), &["--suite", "chacha"]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let o = offsite(&["keygen", "--key", s(&key)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("master.key"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn seal_unseal_files_and_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), &[]);
    let plain = dir.path().join("plain");
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(&plain, &data).unwrap();
    let sealed = dir.path().join("sealed");
    let o = offsite(
        &[
            "seal",
            "--key",
            s(&key),
            "--path",
            "a/b.dat",
            s(&plain),
            s(&sealed),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // File to file.
    let back = dir.path().join("back");
    let o = offsite(
        &[
            "unseal",
            "--key",
            s(&key),
            "--path",
            "a/b.dat",
            s(&sealed),
            s(&back),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // stdin to stdout, both directions.
    let o = offsite(
        &["seal", "--key", s(&key), "--path", "a/b.dat"],
        Some(&data),
    );
    assert!(o.status.success());
    assert_eq!(o.stdout, std::fs::read(&sealed).unwrap(), "deterministic");
    let o = offsite(
        &["unseal", "--key", s(&key), "--path", "a/b.dat", "-", "-"],
        Some(&o.stdout),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, data);
}

/// A FIFO in `dir` and a thread that reads everything written into it.
fn fifo(dir: &Path, name: &str) -> (std::path::PathBuf, std::thread::JoinHandle<Vec<u8>>) {
    let path = dir.join(name);
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || std::fs::read(reader_path).unwrap());
    (path, reader)
}

/// `offsite seal … /dev/null` once replaced `/dev/null` with a regular file: outputs that are devices or
/// pipes are written in place, never renamed over.
#[test]
fn devices_and_pipes_as_outputs_are_written_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), &[]);
    let plain = dir.path().join("plain");
    let data: Vec<u8> = (0..70_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&plain, &data).unwrap();
    let o = offsite(&["seal", "--key", s(&key), "--path", "p"], Some(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let sealed = o.stdout;

    let (pipe, reader) = fifo(dir.path(), "seal-fifo");
    let o = offsite(
        &["seal", "--key", s(&key), "--path", "p", s(&plain), s(&pipe)],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(reader.join().unwrap(), sealed);
    assert!(std::fs::metadata(&pipe).unwrap().file_type().is_fifo());

    // Unseals `sealed` into a new FIFO: the exit status and what the reader got; the FIFO stays one.
    let sealed_file = dir.path().join("sealed");
    let unseal_into_fifo = |sealed: &[u8], name: &str| {
        std::fs::write(&sealed_file, sealed).unwrap();
        let (pipe, reader) = fifo(dir.path(), name);
        let args = ["unseal", "--key", s(&key), "--path", "p"];
        let o = offsite(&[&args[..], &[s(&sealed_file), s(&pipe)]].concat(), None);
        let got = reader.join().unwrap();
        assert!(std::fs::metadata(&pipe).unwrap().file_type().is_fifo());
        (o, got)
    };
    let (o, got) = unseal_into_fifo(&sealed, "unseal-fifo");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(got, data);

    // A tampered file verifies before anything reaches the pipe: the reader sees nothing.
    let mut bad = sealed.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let (o, got) = unseal_into_fifo(&bad, "tampered-fifo");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(got.is_empty());
}

#[test]
fn tampering_exits_3_names_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), &[]);
    let plain = dir.path().join("plain");
    std::fs::write(&plain, vec![7u8; 100_000]).unwrap();
    let sealed = dir.path().join("sealed.bin");
    let o = offsite(
        &[
            "seal",
            "--key",
            s(&key),
            "--path",
            "p",
            s(&plain),
            s(&sealed),
        ],
        None,
    );
    assert!(o.status.success());
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&sealed, &bytes).unwrap();

    let out = dir.path().join("out");
    let o = offsite(
        &[
            "unseal",
            "--key",
            s(&key),
            "--path",
            "p",
            s(&sealed),
            s(&out),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("sealed.bin") && msg.contains("chunk 0") && msg.contains("offset 24"),
        "{msg}"
    );
    assert!(!out.exists());

    // To stdout: not a byte of plaintext.
    let o = offsite(
        &["unseal", "--key", s(&key), "--path", "p", s(&sealed)],
        None,
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    // Piped input, too.
    let o = offsite(&["unseal", "--key", s(&key), "--path", "p"], Some(&bytes));
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());

    // Wrong path.
    bytes[40] ^= 1;
    std::fs::write(&sealed, &bytes).unwrap();
    let o = offsite(
        &["unseal", "--key", s(&key), "--path", "q", s(&sealed)],
        None,
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("different path"), "{}", stderr(&o));

    // Wrong key: detected before any chunk.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let key2 = keygen(&other, &[]);
    let o = offsite(
        &["unseal", "--key", s(&key2), "--path", "p", s(&sealed)],
        None,
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
}

#[test]
fn passphrase_protected_key() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "hunter2 but longer\n").unwrap();
    let key = keygen(
        dir.path(),
        &[
            "--passphrase-file",
            s(&pass),
            "--kdf-memory-kib",
            "1024",
            "--kdf-passes",
            "1",
        ],
    );
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("kdf argon2id m=1024 t=1 p=1"), "{text}");
    assert!(!text.contains("master "));

    let o = offsite(&["seal", "--key", s(&key), "--path", "x"], Some(b"hello"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("passphrase"), "{}", stderr(&o));

    let o = offsite(
        &[
            "seal",
            "--key",
            s(&key),
            "--passphrase-file",
            s(&pass),
            "--path",
            "x",
        ],
        Some(b"hello"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let o2 = offsite(
        &[
            "unseal",
            "--key",
            s(&key),
            "--passphrase-file",
            s(&wrong),
            "--path",
            "x",
        ],
        Some(&o.stdout),
    );
    assert_eq!(o2.status.code(), Some(1));
    assert!(stderr(&o2).contains("wrong passphrase"), "{}", stderr(&o2));
}

#[test]
fn names_roundtrip_including_long_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), &[]);
    let long = "L".repeat(200);
    let rel = format!("Photos 2024/{long}/IMG 0001.JPG");
    let o = offsite(&["seal-name", "--key", s(&key), &rel], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let sealed = lines.next().unwrap().to_owned();
    assert!(!sealed.contains("Photos"));
    let side: Vec<&str> = lines.collect();
    assert_eq!(side.len(), 1);
    let parts: Vec<&str> = side[0].split(' ').collect();
    assert_eq!(parts[0], "side");
    // Lay the side file down as a sealed tree would have it.
    let root = dir.path().join("remote");
    std::fs::create_dir_all(root.join(parts[1])).unwrap();
    std::fs::write(root.join(parts[1]).join(parts[2]), parts[3]).unwrap();

    let o = offsite(
        &["unseal-name", "--key", s(&key), "--root", s(&root), &sealed],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("{rel}\n"));
    // Without the side file the long component cannot be opened, and the error says why.
    let o = offsite(&["unseal-name", "--key", s(&key), &sealed], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("side file"), "{}", stderr(&o));
}

#[test]
fn every_command_has_help() {
    for cmd in ["keygen", "seal", "unseal", "seal-name", "unseal-name"] {
        let o = offsite(&[cmd, "--help"], None);
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
    }
}
