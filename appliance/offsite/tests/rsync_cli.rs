//! `offsite rsync` between local folders, through a real `rsync --server`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn offsite_rsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_offsite"))
        .arg("rsync")
        .args(args)
        .output()
        .expect("run offsite")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/deep")).unwrap();
    std::fs::write(root.join("docs/a.txt"), "alpha\n").unwrap();
    std::fs::write(root.join("docs/deep/b.bin"), vec![9u8; 200_000]).unwrap();
    std::fs::write(root.join("name with 'quotes' and spaces"), "q").unwrap();
    std::os::unix::fs::symlink("docs/a.txt", root.join("link")).unwrap();
}

#[test]
fn trailing_slash_rule_delete_and_link_dest() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    tree(&src);

    // SRC/ copies the contents; SRC copies the folder itself.
    let contents = d.path().join("contents");
    let o = offsite_rsync(&[&format!("{}/", s(&src)), &s(&contents)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(contents.join("docs/a.txt")).unwrap(),
        b"alpha\n"
    );
    assert_eq!(
        std::fs::read_link(contents.join("link")).unwrap(),
        Path::new("docs/a.txt")
    );
    let itself = d.path().join("itself");
    let o = offsite_rsync(&[&s(&src), &s(&itself)]);
    assert!(o.status.success());
    assert!(itself.join("src/docs/deep/b.bin").is_file());

    // --delete removes what SRC no longer has.
    std::fs::remove_file(src.join("docs/a.txt")).unwrap();
    let o = offsite_rsync(&["--delete", &format!("{}/", s(&src)), &s(&contents)]);
    assert!(o.status.success());
    assert!(!contents.join("docs/a.txt").exists());

    // --link-dest: unchanged files become hard links to the previous copy.
    let next = d.path().join("next");
    let o = offsite_rsync(&[
        "--link-dest",
        "../contents",
        "--stats",
        &format!("{}/", s(&src)),
        &s(&next),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = std::fs::metadata(contents.join("docs/deep/b.bin")).unwrap();
    let b = std::fs::metadata(next.join("docs/deep/b.bin")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link expected");
    assert!(String::from_utf8_lossy(&o.stdout).contains("Literal data: 0 bytes"));
}

#[test]
fn missing_source_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let o = offsite_rsync(&[&s(&d.path().join("nope")), &s(&d.path().join("dst"))]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope"), "{err}");
}
