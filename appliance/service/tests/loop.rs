//! The service loop in virtual time, with real backups into a folder target (a local `rsync --server`):
//! nights at their window, a night missed while the service was down, cancel, run now, and a run refused
//! while another holds the lock.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use service::{Clock, Command, Event, Handle, Options};
use tokio::sync::watch;

/// Time that moves only when the test says so.
struct VirtualClock(watch::Sender<Timestamp>);

impl VirtualClock {
    fn set(&self, t: Timestamp) {
        self.0.send_replace(t);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            loop {
                if *rx.borrow_and_update() >= t {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

fn berlin() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
}

fn at(s: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = s.parse().unwrap();
    dt.to_zoned(berlin()).unwrap().timestamp()
}

struct Box_ {
    dir: tempfile::TempDir,
}

impl Box_ {
    fn new() -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        std::fs::write(share.join("a.txt"), b"hello").unwrap();
        let key = seal::MasterKey::generate(seal::Suite::for_this_cpu()).unwrap();
        key.save_new(&dir.path().join("master.key"), None).unwrap();
        let text = format!(
            "state_dir = \"state\"\nkey_file = \"master.key\"\n[target]\npath = {:?}\n\
             [schedule]\nat = \"01:30\"\njitter_minutes = 0\n\
             [[share]]\nname = \"docs\"\npath = {:?}\nretention = {{ last = 100 }}\n",
            dir.path().join("target").to_str().unwrap(),
            share.to_str().unwrap()
        );
        std::fs::write(dir.path().join("offsite.toml"), text).unwrap();
        Box_ { dir }
    }

    fn config(&self) -> backup::Config {
        backup::Config::load(&self.dir.path().join("offsite.toml")).unwrap()
    }

    fn start(
        &self,
        clock: Arc<VirtualClock>,
    ) -> (Handle, tokio::task::JoinHandle<()>, service::Subscription) {
        let service::Started {
            handle,
            task,
            events,
        } = service::start(
            self.config(),
            Options {
                clock,
                tz: berlin(),
                salt: b"test box".to_vec(),
                backup: backup::BackupOptions::default(),
            },
        );
        (handle, task, events)
    }

    /// Snapshot folders with (name, complete).
    fn snapshots(&self) -> Vec<(String, bool)> {
        let d = self.dir.path().join("target/docs");
        let mut v: Vec<(String, bool)> = std::fs::read_dir(&d)
            .map(|r| {
                r.map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.path().join(".offsite-manifest").exists(),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The soak measures the whole process's memory and descriptors, so the tests of this file take turns: a
/// service running beside it in the same process would be measured too.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The next event that `pick` accepts (others are skipped), within a generous time.
async fn next<T>(rx: &mut service::Subscription, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Duration::from_secs(120);
    tokio::time::timeout(deadline, async {
        loop {
            let e = rx.recv().await.expect("event stream ended");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("expected event did not come")
}

fn scheduled(e: &Event) -> Option<(Timestamp, scheduler::Reason)> {
    match e {
        Event::Scheduled { at, reason, .. } => Some((*at, *reason)),
        _ => None,
    }
}

fn finished(e: &Event) -> Option<(String, String)> {
    match e {
        Event::RunFinished {
            slot,
            status,
            error,
        } => {
            // Shown only when the test fails: the reason behind a status that was not expected.
            if let Some(e) = error {
                eprintln!("run {slot} finished {status}: {e}");
            }
            Some((slot.clone(), status.clone()))
        }
        _ => None,
    }
}

fn write_sparse(p: &Path, len: u64) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(len).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_catch_up_cancel_and_run_now() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = Box_::new();
    let clock = Arc::new(VirtualClock(watch::channel(at("2026-06-01T00:00")).0));
    let (h, task, mut rx) = b.start(clock.clone());

    // The first night's window, then the run, then the next night.
    let (when, reason) = next(&mut rx, scheduled).await;
    assert_eq!(
        (when, reason),
        (at("2026-06-01T01:30"), scheduler::Reason::Window)
    );
    clock.set(at("2026-06-01T01:30"));
    assert_eq!(
        next(&mut rx, finished).await,
        ("*".to_string(), "ok".to_string())
    );
    assert_eq!(next(&mut rx, scheduled).await.0, at("2026-06-02T01:30"));
    assert_eq!(b.snapshots(), [("2026-05-31T233000Z".to_string(), true)]);

    // The service stops; the box is off for two nights and comes back at 09:00.
    drop(h);
    task.await.unwrap();
    clock.set(at("2026-06-04T09:00"));
    let (h, task, mut rx) = b.start(clock.clone());
    assert_eq!(
        next(&mut rx, scheduled).await,
        (at("2026-06-04T09:05"), scheduler::Reason::CatchUp)
    );
    clock.set(at("2026-06-04T09:05"));
    assert_eq!(next(&mut rx, finished).await.1, "ok");
    assert_eq!(next(&mut rx, scheduled).await.0, at("2026-06-05T01:30"));

    // A long run cancelled: the night is not retried and leaves no complete snapshot.
    write_sparse(&b.dir.path().join("share/big.img"), 3 << 30);
    clock.set(at("2026-06-05T01:30"));
    next(&mut rx, |e| {
        matches!(e, Event::RunStarted { .. }).then_some(())
    })
    .await;
    h.send(Command::RunNow { shares: vec![] }).await.unwrap();
    let why = next(&mut rx, |e| match e {
        Event::Refused { why } => Some(why.clone()),
        _ => None,
    })
    .await;
    assert!(why.contains("already running"), "{why}");
    h.send(Command::Cancel).await.unwrap();
    assert_eq!(next(&mut rx, finished).await.1, "cancelled");
    assert_eq!(next(&mut rx, scheduled).await.0, at("2026-06-06T01:30"));
    let snaps = b.snapshots();
    assert_eq!(
        snaps.iter().filter(|s| s.1).count(),
        2,
        "the cancelled run made no complete snapshot: {snaps:?}"
    );

    // Run now: a backup outside the schedule (a small share again).
    std::fs::remove_file(b.dir.path().join("share/big.img")).unwrap();
    h.send(Command::RunNow { shares: vec![] }).await.unwrap();
    assert_eq!(
        next(&mut rx, finished).await,
        ("now".to_string(), "ok".to_string())
    );
    // The schedule is unchanged by it.
    assert_eq!(next(&mut rx, scheduled).await.0, at("2026-06-06T01:30"));

    // A run refused by the lock (a backup started by hand holds it) fails and is retried later.
    let held = backup::lock::StateLock::acquire(&b.dir.path().join("state")).unwrap();
    clock.set(at("2026-06-06T01:30"));
    assert_eq!(next(&mut rx, finished).await.1, "failed");
    let (when, reason) = next(&mut rx, scheduled).await;
    assert_eq!(
        (when, reason),
        (at("2026-06-06T01:45"), scheduler::Reason::Retry)
    );
    drop(held);
    clock.set(when);
    assert_eq!(next(&mut rx, finished).await.1, "ok");
    drop(h);
    task.await.unwrap();
    let states = scheduler::load_states(&b.dir.path().join("state/schedule.json")).unwrap();
    assert_eq!(states["*"].done_night, Some("2026-06-06".parse().unwrap()));
}

/// A listener on the backup's own thread that does not keep up (here: does not read at all during the
/// run) still gets the run's start and end, in order, around a flood of skipped files.
#[tokio::test(flavor = "current_thread")]
async fn a_late_listener_still_sees_the_run_start_and_end() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = Box_::new();
    let fifos = b.dir.path().join("share/fifos");
    std::fs::create_dir(&fifos).unwrap();
    let n = 3 * service::events::CHATTER_LIMIT;
    let status = std::process::Command::new("mkfifo")
        .args((0..n).map(|i| format!("p{i}")))
        .current_dir(&fifos)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(status.success());
    let clock = Arc::new(VirtualClock(watch::channel(at("2026-06-01T00:00")).0));
    let (h, task, mut rx) = b.start(clock);
    let mut late = h.subscribe();
    h.send(Command::RunNow { shares: vec![] }).await.unwrap();
    // Wait for the end on the first listener; `late` is not read meanwhile.
    assert_eq!(next(&mut rx, finished).await.1, "partial");
    let mut seen = Vec::new();
    while let Some(e) = late.try_recv() {
        seen.push(e);
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            Event::RunStarted { .. } => "started",
            Event::RunFinished { .. } => "finished",
            Event::Skipped { .. } => "skipped",
            Event::Progress { .. } => "progress",
            _ => "other",
        })
        .collect();
    let started = kinds.iter().position(|k| *k == "started");
    let ended = kinds.iter().position(|k| *k == "finished");
    assert!(
        started.is_some() && started < ended,
        "start and end in order: {kinds:?}"
    );
    let skipped = kinds.iter().filter(|k| **k == "skipped").count();
    assert!(
        skipped > 0 && skipped <= service::events::CHATTER_LIMIT,
        "skipped files thinned to the limit: {skipped}"
    );
    drop(h);
    task.await.unwrap();
}

/// Every file below `root`: relative path → content.
/// Every file under `root`: its size and BLAKE3 digest, read piece by piece (the soak measures the
/// process's memory: holding whole trees here would measure the test, not the service).
fn files(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, (u64, [u8; 32])> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let mut h = blake3::Hasher::new();
                let n = std::io::copy(&mut std::fs::File::open(&p).unwrap(), &mut h).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().to_owned(),
                    (n, *h.finalize().as_bytes()),
                );
            }
        }
    }
    out
}

/// The process's resident memory (KiB) and open file descriptors.
fn resources() -> (u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (rss, fds)
}

/// Soak (issue 9): night after night of the service loop in virtual time, with realistic churn in the share
/// (edits, insertions, appends, renames, deletions, new files); each night's snapshot is unsealed with the
/// standalone path (`unseal-tree`'s code, manifest checked) and compared with the share; memory and file
/// descriptors of the process stay flat. `OFFSITE_SOAK_NIGHTS` nights (default 12; the long form 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nights_with_churn_restore_exactly_and_stay_flat() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nights: u32 = std::env::var("OFFSITE_SOAK_NIGHTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let b = Box_::new();
    let share = b.dir.path().join("share");
    let mut x: u64 = 0x5eed_50a4;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    for i in 0..40u64 {
        let len = [10usize, 5_000, 70_000, 400_000][(i % 4) as usize];
        let body: Vec<u8> = (0..len).map(|_| rnd(256) as u8).collect();
        let p = share.join(format!("d{}/f{i}.bin", i % 4));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let keys = seal::MasterKey::load(&b.dir.path().join("master.key"), None)
        .unwrap()
        .derive_keys();
    let clock = Arc::new(VirtualClock(watch::channel(at("2026-01-10T12:00")).0));
    let (h, task, mut rx) = b.start(clock.clone());
    let mut seen = Vec::new();
    for night in 0..nights {
        // The night's churn.
        let all: Vec<std::path::PathBuf> = files(&share).into_keys().collect();
        for _ in 0..5 {
            let f = share.join(&all[rnd(all.len() as u64) as usize]);
            let mut data = std::fs::read(&f).unwrap_or_default();
            let at_ = rnd(data.len() as u64 + 1) as usize;
            match rnd(3) {
                0 if !data.is_empty() => {
                    let i = at_.min(data.len() - 1);
                    data[i] ^= 0xa5;
                }
                1 => {
                    let ins: Vec<u8> = (0..rnd(500) + 1).map(|v| v as u8).collect();
                    data.splice(at_..at_, ins);
                }
                _ => data.extend((0..rnd(20_000) + 1).map(|v| (v * 7) as u8)),
            }
            std::fs::write(&f, data).unwrap();
        }
        let victim = share.join(&all[rnd(all.len() as u64) as usize]);
        if rnd(2) == 0 {
            std::fs::remove_file(&victim).unwrap();
        } else {
            std::fs::rename(&victim, victim.with_extension(format!("n{night}"))).unwrap();
        }
        std::fs::write(
            share.join(format!("d{}/new-{night}.bin", rnd(4))),
            (0..rnd(100_000) + 1)
                .map(|v| (v ^ u64::from(night)) as u8)
                .collect::<Vec<u8>>(),
        )
        .unwrap();

        let (when, _) = next(&mut rx, scheduled).await;
        clock.set(when);
        assert_eq!(next(&mut rx, finished).await.1, "ok", "night {night}");
        // The night's snapshot, unsealed without the target's help, equals the share.
        let snap = b
            .snapshots()
            .into_iter()
            .filter(|s| s.1)
            .map(|s| s.0)
            .next_back()
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let dst = out.path().join("restored");
        let src = b.dir.path().join("target/docs").join(&snap);
        let report = backup::restore::local::unseal_tree(
            &keys,
            &backup::restore::local::TreeRequest {
                src: &src,
                dst: &dst,
                share: "docs",
                snapshot: &snap,
                overwrite: false,
                tmp_dir: out.path(),
            },
            Box::new(|_| {}),
        )
        .unwrap();
        assert_eq!(
            report.problem_count, 0,
            "night {night}: {:?}",
            report.problems
        );
        assert!(
            files(&dst) == files(&share),
            "night {night}: the restore differs"
        );
        seen.push(resources());
    }
    drop(h);
    task.await.unwrap();
    // Flat: after the first nights (the allocator's per-thread arenas fill up within about three
    // nights: a step of some 8 MiB, measured), memory grows by less than 4 MiB and the descriptors not
    // at all.
    let warm = seen[(nights as usize / 4).max(3).min(seen.len() - 1)];
    let last = *seen.last().unwrap();
    println!("soak: {nights} nights; RSS KiB and fds per night: {seen:?}");
    assert!(
        last.0 <= warm.0 + 4 * 1024,
        "memory grew from {} KiB to {} KiB over {nights} nights",
        warm.0,
        last.0
    );
    // A descriptor still being closed when the night's report arrives (a child's pipe or a pidfd that
    // tokio reaps in the background, a blocking thread returning) is not a leak: give the process up to
    // two seconds to come back down before calling it one.
    let mut fds = last.1;
    for _ in 0..40 {
        if fds <= warm.1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        fds = resources().1;
    }
    assert!(
        fds <= warm.1,
        "file descriptors grew: {seen:?}, still {fds} after 2 s: {:?}",
        open_descriptors()
    );
}

/// What this process's descriptors point at, for a failure message.
fn open_descriptors() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .map(|e| match std::fs::read_link(e.path()) {
                    Ok(t) => format!("{} -> {}", e.file_name().to_string_lossy(), t.display()),
                    Err(_) => e.file_name().to_string_lossy().into_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}
