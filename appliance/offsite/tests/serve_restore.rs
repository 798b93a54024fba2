//! The restore screen's API of `offsite serve`, through `curl` over HTTPS against a backup on a real
//! OpenSSH server with the real rsync: snapshots and folders with plaintext names (one not UTF-8),
//! downloads of a file and of folders as tar byte-identical to the share, restores into a data volume
//! byte-identical, destinations outside the data volumes refused (directly, through `..`, through a
//! symlink), a tampered file named in the restore's report while the others are restored — and every new
//! route closed without a session, changes refused without the CSRF token.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::web::*;
use common::*;
use testpeers::TestSshd;

fn ssh_target(sshd: &TestSshd, path: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = {:?}\nidentity_file = {:?}\nknown_hosts = {:?}\npath = {path:?}\ntimeout_secs = 30",
        sshd.port,
        sshd.user,
        sshd.client_key.to_str().unwrap(),
        sshd.known_hosts.to_str().unwrap(),
    )
}

/// Starts `offsite serve` on a free port with `volume` as its only data volume.
fn start(s: &Setup, volume: &Path) -> Serve {
    start_serve(
        s,
        &format!("data_volumes = [{:?}]", volume.to_str().unwrap()),
    )
}

/// One request with curl: (status, response headers, body bytes, whether it arrived whole). `jar`
/// keeps the cookies.
fn curl(
    srv: &Serve,
    jar: &Path,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, String, Vec<u8>, bool) {
    let r = request(srv, jar, method, path, headers, body);
    (r.status, r.head, r.body, r.complete)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn sealed_name(s: &Setup, rel: &str) -> String {
    let out = offsite()
        .args(["seal-name", "--key"])
        .arg(&s.key)
        .arg(rel)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// The share's files below `prefix` (relative to the share root, as a tar of that folder names them).
fn share_below(share: &Path, prefix: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree_map(share, &|_| false)
        .into_iter()
        .filter(|(k, _)| {
            prefix.is_empty() || k.starts_with(prefix) && k.get(prefix.len()) == Some(&b'/')
        })
        .collect()
}

fn untar(tar: &[u8], into: &Path) {
    fs::create_dir_all(into).unwrap();
    let file = into.with_extension("tar");
    fs::write(&file, tar).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar -xf failed");
}

#[test]
fn browse_download_and_restore_from_the_page() {
    let sshd = TestSshd::start();
    let s = Setup::new();
    fill_share(&s.share);
    s.write_config(&ssh_target(&sshd, s.target.to_str().unwrap()), "");
    s.backup_ok();
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 1);
    let snap_dir = snaps[0].clone();
    let snap = snap_dir.file_name().unwrap().to_str().unwrap().to_owned();

    // The data volume, a folder outside it, and a symlink inside it that leads out.
    let vol = s.dir.path().join("volume");
    let outside = s.dir.path().join("outside");
    fs::create_dir_all(&vol).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, vol.join("escape")).unwrap();

    let srv = start(&s, &vol);
    let jar = s.dir.path().join("jar");
    let stranger = s.dir.path().join("jar-stranger");

    // Every new route is closed without a session.
    for (m, p) in [
        ("GET", "/api/shares".to_owned()),
        ("GET", "/api/snapshots?share=docs".to_owned()),
        ("GET", format!("/api/ls?share=docs&snapshot={snap}")),
        (
            "GET",
            format!("/api/download?share=docs&snapshot={snap}&path=report.txt"),
        ),
        ("POST", "/api/restore".to_owned()),
        ("GET", "/api/restore/0123456789abcdef".to_owned()),
    ] {
        let body = (m == "POST").then_some("{\"share\":\"docs\",\"to\":\"/tmp/x\"}");
        let (code, _, _, _) = curl(&srv, &stranger, m, &p, &[], body);
        assert_eq!(code, 401, "{m} {p}");
    }

    // Log in (first run).
    let (code, _, body, _) = curl(
        &srv,
        &jar,
        "POST",
        "/api/setup",
        &[],
        Some(&format!(
            "{{\"code\":\"{}\",\"password\":\"correct horse battery staple\"}}",
            srv.setup_code
        )),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let csrf = json(&body)["csrf"].as_str().unwrap().to_owned();
    let token = format!("x-csrf-token: {csrf}");
    let get = |p: &str| curl(&srv, &jar, "GET", p, &[], None);
    let post_restore = |body: &serde_json::Value| {
        curl(
            &srv,
            &jar,
            "POST",
            "/api/restore",
            std::slice::from_ref(&token),
            Some(&body.to_string()),
        )
    };
    // A restore without (or with a wrong) CSRF token is refused, and writes nothing.
    let asked =
        serde_json::json!({"share": "docs", "paths": [], "to": vol.join("csrf").to_str().unwrap()});
    for h in [vec![], vec!["x-csrf-token: wrong".to_owned()]] {
        let (code, _, _, _) = curl(
            &srv,
            &jar,
            "POST",
            "/api/restore",
            &h,
            Some(&asked.to_string()),
        );
        assert_eq!(code, 403);
    }
    assert!(!vol.join("csrf").exists());

    // Shares and snapshots.
    let (code, _, body, _) = get("/api/shares");
    assert_eq!(code, 200);
    let shares = json(&body);
    assert_eq!(shares["shares"][0]["name"], "docs", "{shares}");
    let (code, _, body, _) = get("/api/snapshots?share=docs");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    let list = v["snapshots"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["id"], snap.as_str());
    assert_eq!(list[0]["complete"], true);
    let files = tree_map(&s.share, &|_| false).len() as u64 - 1; // the symlink is not a file
    assert_eq!(list[0]["files"], files, "{v}");
    assert!(list[0]["time"].as_str().unwrap().ends_with('Z'), "{v}");
    let (code, _, body, _) = get("/api/snapshots?share=nope");
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("nope"));

    // The root folder with plaintext names: folders first; a name that is not UTF-8 comes lossily for
    // display and exactly as `enc`.
    let (code, _, body, _) = get(&format!("/api/ls?share=docs&snapshot={snap}"));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let root = json(&body);
    let entries = root["entries"].as_array().unwrap();
    let by_name: BTreeMap<String, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e))
        .collect();
    assert_eq!(by_name["photos"]["kind"], "dir");
    assert_eq!(by_name["deep"]["kind"], "dir");
    assert_eq!(entries[0]["kind"], "dir", "folders first: {root}");
    assert_eq!(by_name["report.txt"]["kind"], "file");
    assert_eq!(
        by_name["report.txt"]["size"],
        fs::metadata(s.share.join("report.txt")).unwrap().len()
    );
    assert_eq!(by_name["link-to-report"]["kind"], "symlink");
    assert_eq!(by_name["link-to-report"]["link"], "report.txt");
    let odd = by_name["not-utf8-\u{FFFD}\u{FFFD}.bin"];
    assert_eq!(odd["enc"], "not-utf8-%FF%FE.bin");
    assert_eq!(by_name["new\nline"]["enc"], "new%0Aline");
    assert_eq!(by_name.len(), 10, "{root}");
    // Without a snapshot: the newest. A subfolder, with its way back up.
    let (code, _, body, _) = get("/api/ls?share=docs&path=photos/2024");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let sub = json(&body);
    assert_eq!(sub["snapshot"], snap.as_str());
    assert_eq!(sub["entries"][0]["name"], "img-0001.jpg");
    assert_eq!(sub["entries"][0]["enc"], "photos/2024/img-0001.jpg");
    assert_eq!(sub["entries"][0]["size"], 100_000);
    assert_eq!(sub["crumbs"][0]["enc"], "photos");
    assert_eq!(sub["crumbs"][1]["enc"], "photos/2024");
    // A file is not a folder; a missing folder and `..` are errors that name them.
    let (code, _, body, _) = get(&format!(
        "/api/ls?share=docs&snapshot={snap}&path=report.txt"
    ));
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("report.txt"));
    let (code, _, body, _) = get(&format!("/api/ls?share=docs&snapshot={snap}&path=nothing"));
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("nothing"));
    let (code, _, _, _) = get(&format!("/api/ls?share=docs&snapshot={snap}&path=../etc"));
    assert_eq!(code, 400);

    // Downloads: a file as itself (the one with a non-UTF-8 name by its exact bytes), byte-identical.
    for (enc, rel) in [
        ("report.txt", b"report.txt".as_slice()),
        ("big.bin", b"big.bin".as_slice()),
        ("not-utf8-%FF%FE.bin", b"not-utf8-\xff\xfe.bin".as_slice()),
        (
            "photos/2024/img-0001.jpg",
            b"photos/2024/img-0001.jpg".as_slice(),
        ),
    ] {
        let (code, head, body, _) = get(&format!(
            "/api/download?share=docs&snapshot={snap}&path={enc}"
        ));
        assert_eq!(code, 200, "{enc}: {}", String::from_utf8_lossy(&body));
        let want = fs::read(s.share.join(OsStr::from_bytes(rel))).unwrap();
        assert!(body == want, "{enc}: the download differs from the share");
        let head = head.to_lowercase();
        assert!(
            head.contains("content-disposition: attachment; filename=\""),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", want.len())),
            "{head}"
        );
    }
    // A folder as a tar, and the whole share (no path), byte-identical once unpacked.
    let work = tempfile::tempdir().unwrap();
    for (enc, prefix) in [("photos", b"photos".as_slice()), ("", b"".as_slice())] {
        let (code, head, body, _) = get(&format!(
            "/api/download?share=docs&snapshot={snap}&path={enc}"
        ));
        assert_eq!(code, 200, "{enc}: {}", String::from_utf8_lossy(&body));
        assert!(
            head.to_lowercase()
                .contains("content-type: application/x-tar"),
            "{head}"
        );
        let into = work.path().join(format!("untar-{enc}"));
        untar(&body, &into);
        assert_eq!(
            tree_map(&into, &|_| false),
            share_below(&s.share, prefix),
            "tar of {enc:?}"
        );
    }
    let (code, _, _, _) = get(&format!(
        "/api/download?share=docs&snapshot={snap}&path=nothing"
    ));
    assert_eq!(code, 404);

    // A restore into the data volume: some paths (one not UTF-8), then the whole share.
    let wait = |job: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, _, body, _) = get(&format!("/api/restore/{job}"));
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            let j = json(&body);
            if j["state"] != "running" {
                return j;
            }
            assert!(Instant::now() < deadline, "the restore did not end: {j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let restore = |paths: &[&str], to: &Path, overwrite: bool| -> serde_json::Value {
        let (code, _, body, _) = post_restore(&serde_json::json!({
            "share": "docs", "snapshot": snap, "paths": paths,
            "to": to.to_str().unwrap(), "overwrite": overwrite,
        }));
        assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
        wait(json(&body)["job"].as_str().unwrap())
    };
    let r1 = vol.join("r1");
    let j = restore(
        &["deep", "photos/2024/img-0001.jpg", "not-utf8-%FF%FE.bin"],
        &r1,
        false,
    );
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["problem_count"], 0, "{j}");
    assert_eq!(j["files"], 3, "{j}");
    let want: BTreeMap<Vec<u8>, Vec<u8>> = tree_map(&s.share, &|_| false)
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(b"deep/")
                || k == b"photos/2024/img-0001.jpg"
                || k == b"not-utf8-\xff\xfe.bin"
        })
        .collect();
    assert_eq!(tree_map(&r1, &|_| false), want);
    // Again without overwrite: each file is reported as existing, not replaced; with it: replaced.
    fs::write(r1.join("deep/er/still/deeper/file.txt"), b"changed here").unwrap();
    let j = restore(&["deep"], &r1, false);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["problems"][0]["kind"], "exists", "{j}");
    assert_eq!(
        fs::read(r1.join("deep/er/still/deeper/file.txt")).unwrap(),
        b"changed here"
    );
    let j = restore(&["deep"], &r1, true);
    assert_eq!(j["problem_count"], 0, "{j}");
    assert_eq!(tree_map(&r1, &|_| false), want);
    // The whole share, into a folder that does not exist yet.
    let all = vol.join("new/all");
    let j = restore(&[], &all, false);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["problem_count"], 0, "{j}");
    assert_eq!(tree_map(&all, &|_| false), tree_map(&s.share, &|_| false));

    // Destinations outside the data volume are refused before anything runs: directly, through `..`,
    // through a symlink inside the volume, relative; and nothing is written outside.
    for (to, code) in [
        (outside.join("r").to_str().unwrap().to_owned(), 403),
        (format!("{}/../outside/r", vol.to_str().unwrap()), 400),
        (vol.join("escape").to_str().unwrap().to_owned(), 403),
        (vol.join("escape/deeper").to_str().unwrap().to_owned(), 403),
        ("relative/path".to_owned(), 400),
        ("/".to_owned(), 403),
    ] {
        let (got, _, body, _) = post_restore(&serde_json::json!({
            "share": "docs", "snapshot": snap, "paths": [], "to": to, "overwrite": true,
        }));
        assert_eq!(got, code, "{to}: {}", String::from_utf8_lossy(&body));
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("restore folder"),
            "{to}"
        );
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // A path outside the share and an unknown share are refused too.
    let (code, _, _, _) = post_restore(&serde_json::json!({
        "share": "docs", "paths": ["../x"], "to": vol.join("x").to_str().unwrap(),
    }));
    assert_eq!(code, 400);
    let (code, _, _, _) = post_restore(&serde_json::json!({
        "share": "nope", "paths": [], "to": vol.join("x").to_str().unwrap(),
    }));
    assert_eq!(code, 404);
    let (code, _, _, _) = get("/api/restore/unknown");
    assert_eq!(code, 404);

    // Tamper with one file on the target (replace it, never write through: files are hard links).
    let sealed = snap_dir.join(sealed_name(&s, "big.bin"));
    let mut bytes = fs::read(&sealed).unwrap();
    bytes[100_000] ^= 1;
    fs::remove_file(&sealed).unwrap();
    fs::write(&sealed, &bytes).unwrap();
    // The restore names it (tampered) and restores every other file.
    let t = vol.join("tampered");
    let j = restore(&[], &t, false);
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["problem_count"], 1, "{j}");
    assert_eq!(j["problems"][0]["path"], "big.bin", "{j}");
    assert_eq!(j["problems"][0]["kind"], "tampered", "{j}");
    let mut want = tree_map(&s.share, &|_| false);
    want.remove(b"big.bin".as_slice());
    assert_eq!(tree_map(&t, &|_| false), want);
    // A download of it is an error naming it; a tar holding it is cut short (never a silent gap).
    let (code, _, body, _) = get(&format!(
        "/api/download?share=docs&snapshot={snap}&path=big.bin"
    ));
    assert_eq!(code, 502);
    let e = json(&body)["error"].as_str().unwrap().to_owned();
    assert!(e.contains("big.bin") && e.contains("tampered"), "{e}");
    let (_, _, body, whole) = get(&format!("/api/download?share=docs&snapshot={snap}"));
    assert!(
        !whole,
        "a tar with a tampered file ended normally ({} bytes)",
        body.len()
    );
    // Another file still downloads.
    let (code, _, body, _) = get(&format!(
        "/api/download?share=docs&snapshot={snap}&path=report.txt"
    ));
    assert_eq!(code, 200);
    assert!(body == fs::read(s.share.join("report.txt")).unwrap());

    let log = fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("big.bin"), "the cut tar is logged: {log}");
}
