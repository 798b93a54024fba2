//! `service` (package `offsite-service`): the appliance's long-running part. One loop owns the schedule:
//! it sleeps until the next window ([`scheduler::next_due`]), runs the backup, records the outcome in
//! `state_dir/schedule.json`, and meanwhile answers "run now" and "cancel". Everything that happens is
//! broadcast as an [`Event`] (the web page's progress bar and history, the log).
//!
//! Runs are sequential (one loop) and never overlap with an `offsite backup` started by hand either: the
//! backup takes the state folder's lock ([`backup::lock`]); a run refused by it counts as a failure and is
//! retried with back-off.
//!
//! The clock is injected ([`Clock`]) so that tests can drive nights and DST changes in virtual time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use backup::{BackupOptions, Config, Progress, RunReport, ShareStatus};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use scheduler::{Due, Policy, Reason, States};
use serde::Serialize;
use tokio::sync::mpsc;

pub mod events;
pub use events::{Bus, Subscription};

/// The time source of the loop.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Completes at (or after) `t`.
    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The wall clock. Sleeps in steps of at most a minute and looks at the clock again after each, so a
/// suspended box or a clock stepped by NTP wakes up on time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let left = t.duration_since(Timestamp::now());
                if left <= jiff::SignedDuration::ZERO {
                    return;
                }
                let step = left.min(jiff::SignedDuration::from_secs(60));
                let step = std::time::Duration::try_from(step).unwrap_or_default();
                tokio::time::sleep(step).await;
            }
        })
    }
}

/// What the loop can be asked.
#[derive(Debug)]
pub enum Command {
    /// Back up these shares now (all when empty). Not part of the schedule: tonight's run still happens.
    RunNow { shares: Vec<String> },
    /// Stop the run in progress. A scheduled night cancelled this way is not retried.
    Cancel,
    /// Cancel the run in progress (if any) and end the loop.
    Shutdown,
    /// The config changed (sent by [`Handle::set_config`]): the schedule is computed anew from it, at
    /// once or, during a run, when the run ends.
    Reload,
}

/// What the loop tells its listeners.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The next scheduled run of a slot (`*`: the shares without their own window).
    Scheduled {
        slot: String,
        at: Timestamp,
        night: Date,
        reason: Reason,
    },
    /// A run started: for a slot's night, or by hand (`slot` = `now`).
    RunStarted { slot: String, shares: Vec<String> },
    /// Counters of the share being backed up.
    Progress {
        share: String,
        counters: backup::progress::Counters,
    },
    /// One entry of a share could not be backed up.
    Skipped {
        share: String,
        path: String,
        reason: String,
    },
    /// A run ended; `status` is ok, partial, failed or cancelled.
    RunFinished {
        slot: String,
        status: String,
        error: Option<String>,
    },
    /// A command that could not be followed (why).
    Refused { why: String },
    /// The schedule's state could not be read or saved (why); the loop goes on.
    StateError { why: String },
}

impl Event {
    /// One line for a person (the console, the page's log view); `None` for progress ticks.
    pub fn describe(&self, tz: &TimeZone) -> Option<String> {
        Some(match self {
            Event::Scheduled {
                slot,
                at,
                night,
                reason,
            } => {
                let local = at.to_zoned(tz.clone());
                format!(
                    "next run of {slot}: {} ({reason:?}, night of {night})",
                    local.strftime("%Y-%m-%d %H:%M %Z")
                )
            }
            Event::RunStarted { slot, shares } if shares.is_empty() => {
                format!("run started ({slot}): all shares")
            }
            Event::RunStarted { slot, shares } => {
                format!("run started ({slot}): {}", shares.join(", "))
            }
            Event::RunFinished {
                slot,
                status,
                error,
            } => match error {
                Some(e) => format!("run finished ({slot}): {status}: {e}"),
                None => format!("run finished ({slot}): {status}"),
            },
            Event::Skipped {
                share,
                path,
                reason,
            } => format!("{share}: skipped {path}: {reason}"),
            Event::Refused { why } => format!("refused: {why}"),
            Event::StateError { why } => format!("schedule state: {why}"),
            Event::Progress { .. } => return None,
        })
    }
}

/// The caller's side of a running service.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    events: Bus,
    next: Arc<Mutex<BTreeMap<String, Event>>>,
    config: Arc<Mutex<Arc<Config>>>,
}

impl Handle {
    /// The config in force (the latest one given to [`Handle::set_config`]).
    pub fn config(&self) -> Arc<Config> {
        lock(&self.config).clone()
    }

    /// Replaces the config (the caller has saved it): readers see it at once, the loop reschedules
    /// with it at once or after the run in progress.
    pub async fn set_config(&self, config: Config) -> Result<(), String> {
        *lock(&self.config) = Arc::new(config);
        self.send(Command::Reload).await
    }

    pub async fn send(&self, c: Command) -> Result<(), String> {
        self.commands
            .send(c)
            .await
            .map_err(|_| "the service has stopped".to_string())
    }

    /// Events from now on. A slow listener never blocks the loop: it may miss progress ticks and
    /// skipped files ([`events`]), never a run's start or end.
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe()
    }

    /// The latest `Scheduled` event of each slot.
    pub fn next_runs(&self) -> Vec<Event> {
        lock(&self.next).values().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A schedule: a window and the shares it runs.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    policy: Policy,
    shares: Vec<String>,
}

fn slots(config: &Config) -> Vec<Slot> {
    let mut all = Slot {
        name: "*".into(),
        policy: config.schedule.policy,
        shares: Vec::new(),
    };
    let mut out = Vec::new();
    for s in &config.shares {
        match s.schedule {
            Some(window) => out.push(Slot {
                name: s.name.clone(),
                policy: Policy {
                    window,
                    ..config.schedule.policy
                },
                shares: vec![s.name.clone()],
            }),
            None => all.shares.push(s.name.clone()),
        }
    }
    if !all.shares.is_empty() {
        out.insert(0, all);
    }
    out
}

/// What the loop needs besides the config.
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// The box's time zone (`TimeZone::system()`).
    pub tz: TimeZone,
    /// Makes this box's jitter its own (the key id is a good choice).
    pub salt: Vec<u8>,
    /// Passed to every backup.
    pub backup: BackupOptions,
}

/// A started loop.
pub struct Started {
    pub handle: Handle,
    pub task: tokio::task::JoinHandle<()>,
    /// Every event from the very first (subscribing later may miss the first schedule).
    pub events: Subscription,
}

/// Starts the loop on the current tokio runtime. It ends on [`Command::Shutdown`], or when every
/// [`Handle`] is dropped.
pub fn start(config: Config, opts: Options) -> Started {
    let (tx, rx) = mpsc::channel(16);
    let events = Bus::new();
    let first = events.subscribe();
    let next = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = Arc::new(Mutex::new(Arc::new(config)));
    let handle = Handle {
        commands: tx,
        events: events.clone(),
        next: next.clone(),
        config: shared.clone(),
    };
    let task = tokio::spawn(run_loop(shared, opts, rx, events, next));
    Started {
        handle,
        task,
        events: first,
    }
}

struct Loop {
    /// The config of this turn of the loop (a reload takes effect at the next turn).
    config: Arc<Config>,
    shared: Arc<Mutex<Arc<Config>>>,
    opts: Options,
    events: Bus,
    states: States,
    /// A `Shutdown` arrived during a run.
    stopping: bool,
    /// The latest `Scheduled` event per slot (for listeners that join later).
    next: Arc<Mutex<BTreeMap<String, Event>>>,
}

impl Loop {
    fn emit(&self, e: Event) {
        if let Event::Scheduled { slot, .. } = &e {
            lock(&self.next).insert(slot.clone(), e.clone());
        }
        self.events.send(e);
    }

    fn state_path(&self) -> std::path::PathBuf {
        self.config.state_dir.join("schedule.json")
    }

    fn save(&self) {
        if let Err(e) = scheduler::save_states(&self.state_path(), &self.states) {
            self.emit(Event::StateError { why: e.to_string() });
        }
    }

    /// Runs a backup of `shares`; a `Cancel` stops it. Returns the report, or `None` if cancelled.
    async fn run(
        &mut self,
        slot: &str,
        shares: &[String],
        rx: &mut mpsc::Receiver<Command>,
    ) -> Option<RunReport> {
        self.emit(Event::RunStarted {
            slot: slot.to_owned(),
            shares: shares.to_vec(),
        });
        let opts = BackupOptions {
            shares: shares.to_vec(),
            now: Some(self.opts.clock.now()),
            ..self.opts.backup.clone()
        };
        let events = self.events.clone();
        let mut on_progress = move |p: &Progress<'_>| {
            let e = match p {
                Progress::Counters { share, counters } => Event::Progress {
                    share: (*share).to_owned(),
                    counters: *counters,
                },
                Progress::Skipped {
                    share,
                    path,
                    reason,
                } => Event::Skipped {
                    share: (*share).to_owned(),
                    path: String::from_utf8_lossy(path).into_owned(),
                    reason: (*reason).to_owned(),
                },
                _ => return,
            };
            events.send(e);
        };
        let backup = backup::run_backup(&self.config, &opts, &mut on_progress);
        tokio::pin!(backup);
        let report = loop {
            tokio::select! {
                r = &mut backup => break Some(r),
                c = rx.recv() => match c {
                    Some(Command::Cancel) => break None,
                    Some(Command::Shutdown) | None => {
                        self.stopping = true;
                        break None;
                    }
                    Some(Command::RunNow { .. }) => self.emit(Event::Refused {
                        why: "a backup is already running".into(),
                    }),
                    // Read at the next turn of the loop.
                    Some(Command::Reload) => {}
                },
            }
        };
        let (status, error) = match &report {
            None => ("cancelled".to_string(), None),
            Some(r) => (
                match r.status() {
                    ShareStatus::Ok => "ok",
                    ShareStatus::Partial => "partial",
                    ShareStatus::Failed => "failed",
                    ShareStatus::DryRun => "dry_run",
                }
                .to_string(),
                r.error
                    .clone()
                    .or_else(|| r.shares.iter().find_map(|s| s.error.clone())),
            ),
        };
        self.emit(Event::RunFinished {
            slot: slot.to_owned(),
            status,
            error,
        });
        report
    }
}

async fn run_loop(
    shared: Arc<Mutex<Arc<Config>>>,
    opts: Options,
    mut rx: mpsc::Receiver<Command>,
    events: Bus,
    next: Arc<Mutex<BTreeMap<String, Event>>>,
) {
    let started = opts.clock.now();
    let config = lock(&shared).clone();
    let mut lp = Loop {
        config,
        shared,
        opts,
        events,
        states: States::new(),
        stopping: false,
        next,
    };
    match scheduler::load_states(&lp.state_path()) {
        Ok(s) => lp.states = s,
        Err(e) => lp.emit(Event::StateError {
            why: format!("{e} (starting with an empty schedule state)"),
        }),
    }
    loop {
        lp.config = lock(&lp.shared).clone();
        let slots = slots(&lp.config);
        // A slot the config no longer has is not "next" any more.
        lock(&lp.next).retain(|name, _| slots.iter().any(|s| &s.name == name));
        let now = lp.opts.clock.now();
        let next: Option<(usize, Due)> = if lp.config.schedule.enabled {
            slots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let state = lp.states.get(&s.name).cloned().unwrap_or_default();
                    let due = scheduler::next_due(
                        now,
                        started,
                        &lp.opts.tz,
                        &s.policy,
                        &state,
                        &lp.opts.salt,
                    );
                    (i, due)
                })
                .min_by_key(|(_, d)| d.at)
        } else {
            None
        };
        if let Some((i, due)) = &next {
            lp.emit(Event::Scheduled {
                slot: slots[*i].name.clone(),
                at: due.at,
                night: due.night,
                reason: due.reason,
            });
        }
        let sleep = async {
            match &next {
                Some((_, due)) => lp.opts.clock.sleep_until(due.at).await,
                None => std::future::pending().await,
            }
        };
        let command = tokio::select! {
            biased;
            c = rx.recv() => match c {
                None => return,
                c => c,
            },
            _ = sleep => None,
        };
        match command {
            Some(Command::RunNow { shares }) => {
                // By hand: not part of the schedule.
                lp.run("now", &shares, &mut rx).await;
                if lp.stopping {
                    return;
                }
            }
            Some(Command::Cancel) => lp.emit(Event::Refused {
                why: "no backup is running".into(),
            }),
            Some(Command::Shutdown) => return,
            Some(Command::Reload) => {}
            None => {
                let Some((i, due)) = next else { continue };
                let slot = &slots[i];
                let start = lp.opts.clock.now();
                let report = lp.run(&slot.name, &slot.shares, &mut rx).await;
                let end = lp.opts.clock.now();
                let state = lp.states.entry(slot.name.clone()).or_default();
                match report {
                    // Partial still made complete snapshots: the night is done.
                    Some(r) => {
                        state.record(due.night, start, end, r.status() != ShareStatus::Failed)
                    }
                    None => state.skip(due.night, start, end),
                }
                lp.save();
                if lp.stopping {
                    return;
                }
            }
        }
    }
}
