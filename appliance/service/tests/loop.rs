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
use tokio::sync::{broadcast, watch};

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
    ) -> (
        Handle,
        tokio::task::JoinHandle<()>,
        broadcast::Receiver<Event>,
    ) {
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

/// The next event that `pick` accepts (others are skipped), within a generous time.
async fn next<T>(
    rx: &mut broadcast::Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Duration::from_secs(120);
    tokio::time::timeout(deadline, async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
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
        Event::RunFinished { slot, status, .. } => Some((slot.clone(), status.clone())),
        _ => None,
    }
}

fn write_sparse(p: &Path, len: u64) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(len).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_catch_up_cancel_and_run_now() {
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
