//! `scheduler` (package `offsite-scheduler`): when the nightly backup runs. Pure decisions over an
//! explicit clock, so every case — a night missed while the box was off, the nights of a DST change, a
//! failure and its retries — is tested by passing the time in; the service's loop only sleeps until the
//! instant [`next_due`] returns and records the outcome with [`SlotState::record`].
//!
//! # The rules
//! * A **night** is a calendar date in the box's time zone; its **window** is that date at the configured
//!   local time (e.g. 01:30), moved by a jitter that is fixed per box and per night (so boxes sharing a
//!   storage host spread out, and a box's runs do not wander from one wake-up to the next).
//! * Each night runs **once**: a night is identified by its date, not by "24 hours later", so the spring
//!   DST change (a 23-hour day, or a window inside the skipped hour: it moves to the first valid instant
//!   after the gap) does not skip a night, and the autumn change (a 25-hour day, a window time that occurs
//!   twice: the first is taken) does not run one twice.
//! * A night whose window has passed without a successful run (the box was off, or asleep) runs as soon as
//!   it is noticed — [`Policy::boot_delay_secs`] after start-up, so the box finishes booting first.
//!   Several missed nights are caught up by one run. A schedule that never ran waits for its first window.
//! * A failed run is retried after [`Policy::retry_first_secs`], doubling up to [`Policy::retry_max_secs`],
//!   at most [`Policy::max_attempts`] times a night; the next night's window starts afresh.
//! * Runs never overlap: that is the backup's state lock (an `flock`, released by the kernel when a
//!   process dies, so a crash cannot leave it stale); "run now" while a run is going is refused by it.

use std::path::Path;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// A nightly window: local time of day, and how far (±) the jitter may move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub at: Time,
    pub jitter_minutes: u32,
}

impl Window {
    /// Parses `HH:MM` (24-hour clock).
    pub fn parse(at: &str, jitter_minutes: u32) -> Result<Window, String> {
        let bad = || format!("{at:?}: expected a time of day as HH:MM (24-hour clock)");
        let (h, m) = at.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i8 = h.parse().map_err(|_| bad())?;
        let m: i8 = m.parse().map_err(|_| bad())?;
        let at = Time::new(h, m, 0, 0).map_err(|_| bad())?;
        if jitter_minutes > 12 * 60 {
            return Err(format!(
                "jitter of {jitter_minutes} minutes: at most 720 (half a day)"
            ));
        }
        Ok(Window { at, jitter_minutes })
    }
}

/// How the scheduler retries and catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub window: Window,
    /// Wait after the first failure (then doubled each time).
    pub retry_first_secs: u64,
    /// Longest wait between retries.
    pub retry_max_secs: u64,
    /// Runs a night at most (the first one included).
    pub max_attempts: u32,
    /// A missed night starts this long after the scheduler starts.
    pub boot_delay_secs: u64,
}

impl Policy {
    pub fn nightly(window: Window) -> Policy {
        Policy {
            window,
            retry_first_secs: 15 * 60,
            retry_max_secs: 4 * 3600,
            max_attempts: 5,
            boot_delay_secs: 5 * 60,
        }
    }
}

/// What one schedule remembers between runs (and restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    /// The last night that had a successful run.
    pub done_night: Option<Date>,
    /// The night of the last attempt, and how many attempts in a row failed that night.
    pub failed_night: Option<Date>,
    pub failures: u32,
    /// When the last attempt started and ended.
    pub last_start: Option<Timestamp>,
    pub last_end: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
}

/// Why a run is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The night's window.
    Window,
    /// A night whose window passed without a successful run.
    CatchUp,
    /// A failed run of this night, again.
    Retry,
}

/// The next run: when, for which night, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at: Timestamp,
    pub night: Date,
    pub reason: Reason,
}

/// The jitter of `night`: a fixed offset in `±jitter_minutes`, from `salt` (something of this box) and the
/// date.
fn jitter(night: Date, window: &Window, salt: &[u8]) -> SignedDuration {
    if window.jitter_minutes == 0 {
        return SignedDuration::ZERO;
    }
    let mut h = blake3::Hasher::new_derive_key("offsite scheduler jitter v1");
    h.update(salt);
    h.update(night.to_string().as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h.finalize().as_bytes()[..8]);
    let span = 2 * u64::from(window.jitter_minutes) * 60 + 1;
    let secs = (u64::from_le_bytes(n) % span) as i64 - i64::from(window.jitter_minutes) * 60;
    SignedDuration::from_secs(secs)
}

/// The instant of `night`'s window in `tz`. A local time that does not exist (spring gap) moves forward
/// past the gap; one that exists twice (autumn) is the earlier.
pub fn window_at(night: Date, tz: &TimeZone, window: &Window, salt: &[u8]) -> Timestamp {
    let local = night.to_datetime(window.at);
    let base = match tz.to_ambiguous_zoned(local).compatible() {
        Ok(z) => z.timestamp(),
        // Only out-of-range dates fail; fall back to UTC rather than never running.
        Err(_) => local
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::UNIX_EPOCH),
    };
    base.checked_add(jitter(night, window, salt))
        .unwrap_or(base)
}

/// The latest night whose window is at or before `now`.
pub fn current_night(now: Timestamp, tz: &TimeZone, window: &Window, salt: &[u8]) -> Date {
    let mut d = now.to_zoned(tz.clone()).date();
    // The window of today's date may lie ahead (or, with jitter, tomorrow's may already have passed).
    if let Ok(next) = d.tomorrow()
        && window_at(next, tz, window, salt) <= now
    {
        return next;
    }
    for _ in 0..3 {
        if window_at(d, tz, window, salt) <= now {
            return d;
        }
        match d.yesterday() {
            Ok(y) => d = y,
            Err(_) => break,
        }
    }
    d
}

fn backoff(policy: &Policy, failures: u32) -> SignedDuration {
    let shift = failures.saturating_sub(1).min(20);
    let secs = policy
        .retry_first_secs
        .saturating_mul(1u64 << shift)
        .min(policy.retry_max_secs.max(policy.retry_first_secs));
    SignedDuration::from_secs(secs as i64)
}

/// When the next run is due, given the state and `now`. `started` is when the scheduler started: a missed
/// night waits until `started + boot_delay`. The result may be in the past: run at once.
pub fn next_due(
    now: Timestamp,
    started: Timestamp,
    tz: &TimeZone,
    policy: &Policy,
    state: &SlotState,
    salt: &[u8],
) -> Due {
    let w = &policy.window;
    let night = current_night(now, tz, w, salt);
    let next_night = night.tomorrow().unwrap_or(night);
    let next_window = Due {
        at: window_at(next_night, tz, w, salt),
        night: next_night,
        reason: Reason::Window,
    };
    if state.done_night.is_some_and(|d| d >= night) {
        return next_window;
    }
    let failures = if state.failed_night == Some(night) {
        state.failures
    } else {
        0
    };
    if failures == 0 {
        let window = window_at(night, tz, w, salt);
        if started <= window {
            // Ahead, or passed while we were running (a long run the night before): run it now.
            return Due {
                at: window,
                night,
                reason: Reason::Window,
            };
        }
        // The window passed before we started. If this schedule ran before, the box was off: catch up.
        // One that never ran waits for its first window (a first backup can be started by hand).
        if state.last_start.is_none() {
            return next_window;
        }
        let boot = started
            .checked_add(SignedDuration::from_secs(policy.boot_delay_secs as i64))
            .unwrap_or(started);
        return Due {
            at: boot.max(now),
            night,
            reason: Reason::CatchUp,
        };
    }
    if failures >= policy.max_attempts {
        return next_window;
    }
    let base = state.last_end.or(state.last_start).unwrap_or(now);
    let retry = base.checked_add(backoff(policy, failures)).unwrap_or(base);
    if retry >= next_window.at {
        return next_window;
    }
    Due {
        at: retry,
        night,
        reason: Reason::Retry,
    }
}

impl SlotState {
    /// Records a run of `night` that started at `start`, ended at `end`, and succeeded or not.
    pub fn record(&mut self, night: Date, start: Timestamp, end: Timestamp, success: bool) {
        self.last_start = Some(start);
        self.last_end = Some(end);
        if success {
            self.done_night = Some(self.done_night.map_or(night, |d| d.max(night)));
            self.last_success = Some(end);
            self.failed_night = None;
            self.failures = 0;
        } else if self.failed_night == Some(night) {
            self.failures += 1;
        } else {
            self.failed_night = Some(night);
            self.failures = 1;
        }
    }
}

impl SlotState {
    /// Records that `night`'s run was cancelled by the owner: the night is not retried.
    pub fn skip(&mut self, night: Date, start: Timestamp, end: Timestamp) {
        self.last_start = Some(start);
        self.last_end = Some(end);
        self.done_night = Some(self.done_night.map_or(night, |d| d.max(night)));
        self.failed_night = None;
        self.failures = 0;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a schedule state file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// The states of all schedules (by name: a share, or `*` for all), kept in one JSON file.
pub type States = std::collections::BTreeMap<String, SlotState>;

/// Reads the states; a missing file is an empty state (everything is due at its next window).
pub fn load_states(path: &Path) -> Result<States, StateError> {
    let p = || path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: p(), source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(States::new()),
        Err(source) => Err(StateError::Io { path: p(), source }),
    }
}

/// Writes the states atomically (temporary file, fsync, rename, fsync of the folder).
pub fn save_states(path: &Path, states: &States) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let json = serde_json::to_vec_pretty(states).map_err(|e| io(std::io::Error::other(e)))?;
    std::io::Write::write_all(&mut tmp, &json).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // The rename itself survives a power cut only once the folder is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests;
