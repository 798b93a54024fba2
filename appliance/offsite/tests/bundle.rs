//! `offsite export-bundle` and `offsite import-bundle` with the real binary: a restore onto a "new box"
//! from a bundle and the target alone, a bundle without keys, and rejected bundles that change nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Setup, expected, export_bundle, fill_share, import_bundle, offsite, ok, tree_map};

const PASS: &str = "a long enough passphrase\nsecond line is not part of it\n";

fn web(dir: &Path) -> String {
    format!("\n[web]\ndata_volumes = [{:?}]\n", dir.to_str().unwrap())
}

fn pass_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join(format!("pass-{}", text.len()));
    fs::write(&p, text).unwrap();
    p
}

fn fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "should fail: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn restore(config: &Path, to: &Path) {
    let o = offsite()
        .args(["restore", "--share", "docs", "--config"])
        .arg(config)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    ok(&o);
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A box that has backed up its share to a folder target.
fn old_box() -> Setup {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config(&web(s.dir.path()));
    s.backup_ok();
    s
}

#[test]
fn restore_onto_a_new_box_from_a_bundle_with_keys() {
    let s = old_box();
    let pass = pass_file(s.dir.path(), PASS);
    let usb = s.dir.path().join("usb");
    fs::create_dir(&usb).unwrap();
    let bundle = usb.join("offsite-bundle");
    let out = ok(&export_bundle(&s.config, &bundle, &pass, true));
    assert!(out.contains("with the master key"), "{out}");
    assert_eq!(mode(&bundle), 0o600);
    let sealed = fs::read(&bundle).unwrap();
    assert_eq!(&sealed[..8], b"OFFSITEB");
    let key = fs::read(&s.key).unwrap();
    assert!(!sealed.windows(16).any(|w| key.windows(16).any(|k| k == w)));
    // Never overwritten.
    let e = fails(&export_bundle(&s.config, &bundle, &pass, true));
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read(&bundle).unwrap(), sealed);

    // The new box: nothing but the bundle, the passphrase and the target.
    let nb = tempfile::tempdir().unwrap();
    let config = nb.path().join("etc/offsite.toml");
    let out = ok(&import_bundle(&config, &bundle, &pass));
    assert!(
        out.contains("share docs") && out.contains("created"),
        "{out}"
    );
    assert!(out.contains(s.target.to_str().unwrap()), "{out}");
    let key_text = String::from_utf8(key.clone()).unwrap();
    let master_line = key_text.lines().find(|l| l.starts_with("master")).unwrap();
    assert!(!out.contains(master_line), "a secret was printed: {out}");
    let new_key = nb.path().join("etc/master.key");
    assert_eq!(fs::read(&new_key).unwrap(), key);
    assert_eq!(mode(&new_key), 0o600);
    assert!(!nb.path().join("etc/state").exists(), "a fresh state dir");
    let log = fs::read_to_string(nb.path().join("etc/offsite-import.log")).unwrap();
    assert!(
        log.contains("imported") && !log.contains(master_line),
        "{log}"
    );

    let restored = nb.path().join("restored");
    restore(&config, &restored);
    assert_eq!(
        tree_map(&restored, &|_| false),
        expected(&s.share, &|_| false)
    );

    // Importing the same bundle again: the key is already there with the same content.
    let out = ok(&import_bundle(&config, &bundle, &pass));
    assert!(out.contains("already there"), "{out}");
}

#[test]
fn bundle_without_keys() {
    let s = old_box();
    let pass = pass_file(s.dir.path(), PASS);
    let bundle = s.dir.path().join("no-keys.bundle");
    let out = ok(&export_bundle(&s.config, &bundle, &pass, false));
    assert!(out.contains("without keys"), "{out}");

    let nb = tempfile::tempdir().unwrap();
    let config = nb.path().join("offsite.toml");
    let out = ok(&import_bundle(&config, &bundle, &pass));
    assert!(out.contains("no key in the bundle"), "{out}");
    assert!(!nb.path().join("master.key").exists());
    // With the key put back by hand (from its recovery copy), the target restores.
    fs::copy(&s.key, nb.path().join("master.key")).unwrap();
    let restored = nb.path().join("restored");
    restore(&config, &restored);
    assert_eq!(
        tree_map(&restored, &|_| false),
        expected(&s.share, &|_| false)
    );
}

#[test]
fn rejected_bundles_change_nothing() {
    let s = old_box();
    let pass = pass_file(s.dir.path(), PASS);
    let good = s.dir.path().join("good.bundle");
    ok(&export_bundle(&s.config, &good, &pass, true));

    // A short passphrase is refused at export.
    let short = pass_file(s.dir.path(), "short\n");
    let e = fails(&export_bundle(
        &s.config,
        &s.dir.path().join("x"),
        &short,
        true,
    ));
    assert!(e.contains("shorter than 8"), "{e}");
    assert!(!s.dir.path().join("x").exists());

    // A box with a config of its own (its data volumes: its own folder).
    let nb = tempfile::tempdir().unwrap();
    let config = nb.path().join("offsite.toml");
    let own = format!(
        "state_dir = \"state\"\nkey_file = \"master.key\"\n[target]\npath = \"/elsewhere\"\n{}",
        web(nb.path())
    );
    fs::write(&config, &own).unwrap();
    let unchanged = |why: &str| {
        assert_eq!(fs::read_to_string(&config).unwrap(), own, "{why}");
        assert!(!nb.path().join("master.key").exists(), "{why}");
    };

    let wrong = pass_file(s.dir.path(), "not the right passphrase\n");
    let e = fails(&import_bundle(&config, &good, &wrong));
    assert!(e.contains("wrong passphrase"), "{e}");
    unchanged("wrong passphrase");

    let sealed = fs::read(&good).unwrap();
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            sealed[..sealed.len() - 1].to_vec(),
            "wrong passphrase",
        ),
        ("truncated header", sealed[..40].to_vec(), "truncated"),
        ("empty", Vec::new(), "truncated"),
        (
            "not a bundle",
            b"state_dir = \"x\"\n".to_vec(),
            "not an offsite config bundle",
        ),
        (
            "version",
            [&sealed[..8], &[9, 0], &sealed[10..]].concat(),
            "version 9",
        ),
        (
            "oversized",
            [sealed.clone(), vec![0; 2 << 20]].concat(),
            "limit",
        ),
        (
            "tampered",
            {
                let mut t = sealed.clone();
                let n = t.len();
                t[n / 2] ^= 4;
                t
            },
            "tampered",
        ),
    ];
    for (what, bytes, says) in variants {
        let f = s.dir.path().join(format!("bad-{}", what.replace(' ', "-")));
        fs::write(&f, bytes).unwrap();
        let e = fails(&import_bundle(&config, &f, &pass));
        assert!(e.contains(says), "{what}: {e}");
        unchanged(what);
    }

    // The shares of `s` lie in `s`'s folder, outside this box's data volumes.
    let e = fails(&import_bundle(&config, &good, &pass));
    assert!(
        e.contains("share[0] \"docs\"") && e.contains(s.share.to_str().unwrap()),
        "{e}"
    );
    assert!(e.contains("not inside"), "{e}");
    unchanged("share outside the box's data volumes");

    // On a fresh box the bundle's own data volumes apply: a share outside them is rejected as well.
    let s2 = Setup::new();
    s2.local_config("\n[web]\ndata_volumes = [\"/srv\"]\n");
    let outside = s2.dir.path().join("outside.bundle");
    ok(&export_bundle(&s2.config, &outside, &pass, false));
    let fresh = tempfile::tempdir().unwrap();
    let fresh_config = fresh.path().join("offsite.toml");
    let e = fails(&import_bundle(&fresh_config, &outside, &pass));
    assert!(
        e.contains("\"docs\"") && e.contains(s2.share.to_str().unwrap()) && e.contains("/srv"),
        "{e}"
    );
    assert!(!fresh_config.exists());

    // A bundle cannot widen the data volumes of a box that has a config: the box keeps its own.
    let s3 = Setup::new();
    let wider = s3.dir.path().parent().unwrap();
    s3.local_config(&format!(
        "\n[web]\ndata_volumes = [{:?}, {:?}]\n",
        s3.dir.path().to_str().unwrap(),
        wider.to_str().unwrap()
    ));
    let widening = s3.dir.path().join("wider.bundle");
    ok(&export_bundle(&s3.config, &widening, &pass, false));
    let boxed = s3.dir.path().join("box");
    fs::create_dir(&boxed).unwrap();
    let box_config = boxed.join("offsite.toml");
    let own3 = format!(
        "state_dir = \"state\"\nkey_file = \"master.key\"\n[target]\npath = \"/elsewhere\"\n{}",
        web(s3.dir.path())
    );
    fs::write(&box_config, &own3).unwrap();
    let said = ok(&import_bundle(&box_config, &widening, &pass));
    assert!(said.contains("kept this box's [web] and [usb]"), "{said}");
    let now = fs::read_to_string(&box_config).unwrap();
    assert!(
        now.contains(&format!(
            "data_volumes = [{:?}]",
            s3.dir.path().to_str().unwrap()
        )),
        "{now}"
    );

    // A key already on the box with other content is never replaced.
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("offsite.toml");
    let o = offsite()
        .args(["keygen", "--key"])
        .arg(other.path().join("master.key"))
        .output()
        .unwrap();
    ok(&o);
    let other_key = fs::read(other.path().join("master.key")).unwrap();
    let own = format!(
        "state_dir = \"state\"\nkey_file = \"master.key\"\n[target]\npath = \"/elsewhere\"\n{}",
        web(s.dir.path())
    );
    fs::write(&other_config, &own).unwrap();
    let e = fails(&import_bundle(&other_config, &good, &pass));
    assert!(e.contains("never replaces"), "{e}");
    assert_eq!(fs::read_to_string(&other_config).unwrap(), own);
    assert_eq!(
        fs::read(other.path().join("master.key")).unwrap(),
        other_key
    );
    let log = fs::read_to_string(other.path().join("offsite-import.log")).unwrap();
    assert!(log.contains("rejected"), "{log}");
}
