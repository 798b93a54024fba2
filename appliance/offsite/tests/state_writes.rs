//! Power loss (issue 9): every file `offsite` puts into its state folder, and the config it rewrites, must
//! survive a power cut at any moment as either the old or the new version, never a torn or empty one. The
//! pattern that guarantees it is: write a temporary file, fsync it, rename it over the old one, fsync the
//! folder. This test runs real commands under `strace` and checks that pattern for every rename into the
//! state folder and the config's folder.
//!
//! Left out on purpose: `state/tmp/` (scratch space, emptied by every run) and `state/manifests/` (a cache of
//! the target's manifests: a torn copy fails its authentication and is fetched again).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// One syscall line of `strace -f -y`: name, the fds' paths (from `N</path>`), the string arguments.
struct Call {
    name: String,
    fd_paths: Vec<String>,
    strings: Vec<String>,
    ok: bool,
}

fn parse(line: &str) -> Option<Call> {
    // "1234  name(args) = ret" (unfinished/resumed halves are not traced for these calls in practice).
    let rest = line.split_once(' ')?.1.trim_start();
    let (name, args) = rest.split_once('(')?;
    let ok = rest
        .rsplit_once(" = ")
        .is_some_and(|(_, r)| !r.starts_with('-'));
    let mut fd_paths = Vec::new();
    let mut strings = Vec::new();
    let mut chars = args.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '<' => {
                let end = args[i + 1..].find('>')? + i + 1;
                fd_paths.push(args[i + 1..end].to_owned());
                while chars.peek().is_some_and(|&(j, _)| j <= end) {
                    chars.next();
                }
            }
            '"' => {
                let end = args[i + 1..].find('"')? + i + 1;
                strings.push(args[i + 1..end].to_owned());
                while chars.peek().is_some_and(|&(j, _)| j <= end) {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    Some(Call {
        name: name.to_owned(),
        fd_paths,
        strings,
        ok,
    })
}

/// Runs `offsite args` under strace; returns the trace's calls (the command must succeed).
fn traced(args: &[&str], cwd: &Path) -> Vec<Call> {
    let trace = cwd.join(format!("trace-{}", args[0]));
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "4096", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,rename,renameat,renameat2,fsync,fdatasync",
        ])
        .arg(env!("CARGO_BIN_EXE_offsite"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("strace (Debian package strace; tests/run installs it)");
    assert!(
        out.status.success(),
        "offsite {args:?} under strace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(parse)
        .collect()
}

/// Checks temp + fsync + rename + fsync(folder) for every successful rename whose new name lies in one of
/// `watched`; returns how many renames were checked.
fn check_renames(calls: &[Call], cwd: &Path, watched: &[PathBuf], skip: &[PathBuf]) -> usize {
    let abs = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            cwd.join(p)
        }
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        if !c.ok || !c.name.starts_with("rename") || c.strings.len() < 2 {
            continue;
        }
        // renameat(olddirfd</dir>, "old", newdirfd</dir>, "new"): relative names resolve against the
        // fds' paths (strace -y shows the process's own working folder for AT_FDCWD).
        let at = |k: usize| -> PathBuf {
            let name = &c.strings[k];
            match c.fd_paths.get(k) {
                Some(dir) if c.name != "rename" && !name.starts_with('/') => {
                    Path::new(dir).join(name)
                }
                _ => abs(name),
            }
        };
        let (from, to) = (at(0), at(1));
        if !watched.iter().any(|w| to.starts_with(w)) || skip.iter().any(|s| to.starts_with(s)) {
            continue;
        }
        checked += 1;
        let synced_before = calls[..i].iter().any(|x| {
            x.ok && (x.name == "fsync" || x.name == "fdatasync")
                && x.fd_paths.first().is_some_and(|p| Path::new(p) == from)
        });
        let dir = to.parent().unwrap();
        let dir_synced_after = calls[i + 1..].iter().any(|x| {
            x.ok && (x.name == "fsync" || x.name == "fdatasync")
                && x.fd_paths.first().is_some_and(|p| Path::new(p) == dir)
        });
        if !synced_before {
            problems.push(format!(
                "{}: renamed without an fsync of the new content",
                to.display()
            ));
        }
        if !dir_synced_after {
            problems.push(format!(
                "{}: its folder was not fsynced after the rename",
                to.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "state writes that a power cut could tear:\n{}",
        problems.join("\n")
    );
    checked
}

#[test]
fn every_state_write_is_durable_and_atomic() {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    let text = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        format!(
            "{text}\n[web]\ndata_volumes = [{:?}]\n",
            s.dir.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let state = s.dir.path().join("state");
    // The state folder, and the config with the key files an import writes beside it.
    let watched = vec![
        state.clone(),
        s.config.clone(),
        s.key.clone(),
        s.dir.path().join("ssh"),
    ];
    // The target (a folder here) is the receiving rsync's business, not the state's.
    let skip = vec![state.join("tmp"), state.join("manifests"), s.target.clone()];
    let config = s.config.to_str().unwrap().to_owned();
    let mut counts = BTreeMap::new();

    // A first run, then one with a change: index, reports, snapshot list.
    let calls = traced(&["backup", "--config", &config], s.dir.path());
    counts.insert(
        "backup 1",
        check_renames(&calls, s.dir.path(), &watched, &skip),
    );
    fs::write(s.share.join("report.txt"), b"changed").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let calls = traced(&["backup", "--config", &config], s.dir.path());
    counts.insert(
        "backup 2",
        check_renames(&calls, s.dir.path(), &watched, &skip),
    );
    // A restore and a verify (their state: the manifest cache, left out above; reports, if any).
    let to = s.dir.path().join("restored");
    let calls = traced(
        &[
            "restore",
            "--config",
            &config,
            "--share",
            "docs",
            "--to",
            to.to_str().unwrap(),
        ],
        s.dir.path(),
    );
    counts.insert(
        "restore",
        check_renames(&calls, s.dir.path(), &watched, &skip),
    );
    // A bundle import rewrites the config (and writes keys beside it).
    let pass = s.dir.path().join("pass");
    fs::write(&pass, "a long passphrase\n").unwrap();
    let bundle_file = s.dir.path().join("b.bundle");
    ok(&export_bundle(&s.config, &bundle_file, &pass, false));
    let calls = traced(
        &[
            "import-bundle",
            "--config",
            &config,
            "--passphrase-file",
            pass.to_str().unwrap(),
            bundle_file.to_str().unwrap(),
        ],
        s.dir.path(),
    );
    counts.insert(
        "import-bundle",
        check_renames(&calls, s.dir.path(), &watched, &skip),
    );
    println!("renames checked: {counts:?}");
    assert!(counts["backup 1"] >= 2, "{counts:?}");
    assert!(counts["import-bundle"] >= 1, "{counts:?}");
}
