//! Snapshot names and the retention policy.
//!
//! A snapshot is a folder `<target.path>/<share>/<YYYY-MM-DDTHHMMSSZ>/` (UTC time of the run's start), so
//! names sort by time. It is complete when its manifest is present (written last).

use std::fmt;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::config::Retention;

/// The name of a snapshot: its UTC start time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(DateTime);

const FORMAT: &str = "%Y-%m-%dT%H%M%SZ";

impl SnapshotId {
    /// The snapshot for a run starting at `t` (sub-second part dropped).
    pub fn at(t: Timestamp) -> SnapshotId {
        let dt = t.to_zoned(TimeZone::UTC).datetime();
        SnapshotId(dt.with().subsec_nanosecond(0).build().unwrap_or(dt))
    }

    /// Parses a folder name; anything else than exactly the snapshot form is `None`.
    pub fn parse(name: &str) -> Option<SnapshotId> {
        if name.len() != 18 || !name.is_ascii() {
            return None;
        }
        let dt = DateTime::strptime(FORMAT, name).ok()?;
        let id = SnapshotId(dt);
        // Only the canonical spelling (no other widths or signs).
        (id.to_string() == name).then_some(id)
    }

    pub fn timestamp(&self) -> Timestamp {
        self.0
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// One second later (two runs started in the same second).
    pub fn next(&self) -> SnapshotId {
        SnapshotId::at(self.timestamp() + jiff::SignedDuration::from_secs(1))
    }

    pub fn datetime(&self) -> DateTime {
        self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.strftime(FORMAT))
    }
}

/// Which of `snapshots` (complete ones, any order) to keep under `policy`. The newest is always kept.
/// Returns the ones to delete, oldest first.
pub fn to_delete(snapshots: &[SnapshotId], policy: &Retention) -> Vec<SnapshotId> {
    let mut sorted = snapshots.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    type Bucket = fn(&DateTime) -> i64;
    let rules: [(u32, Bucket); 4] = [
        (policy.daily, |d| {
            i64::from(d.year()) * 1000 + i64::from(d.day_of_year())
        }),
        (policy.weekly, |d| {
            let w = d.date().iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        (policy.monthly, |d| {
            i64::from(d.year()) * 100 + i64::from(d.month())
        }),
        (policy.yearly, |d| i64::from(d.year())),
    ];
    let mut left: Vec<u32> = rules.iter().map(|r| r.0).collect();
    let mut last_bucket: Vec<Option<i64>> = vec![None; rules.len()];
    let mut delete = Vec::new();
    for (i, s) in sorted.iter().enumerate() {
        let mut keep = i == 0 || (i as u64) < u64::from(policy.last);
        for (r, (_, bucket)) in rules.iter().enumerate() {
            let b = bucket(&s.0);
            if last_bucket[r] != Some(b) {
                last_bucket[r] = Some(b);
                if left[r] > 0 {
                    left[r] -= 1;
                    keep = true;
                }
            }
        }
        if !keep {
            delete.push(*s);
        }
    }
    delete.reverse();
    delete
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM` in the box's time zone (for listings).
pub fn local_time_text(secs: i64) -> String {
    match Timestamp::from_second(secs) {
        Ok(t) => t
            .to_zoned(TimeZone::system())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => format!("@{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SnapshotId {
        SnapshotId::parse(s).unwrap()
    }

    #[test]
    fn names_round_trip_and_reject_others() {
        let s = id("2026-11-26T013000Z");
        assert_eq!(s.to_string(), "2026-11-26T013000Z");
        assert_eq!(s.next().to_string(), "2026-11-26T013001Z");
        for bad in [
            "2026-11-26T01300Z",
            "2026-11-26T013000",
            "2026-13-26T013000Z",
            ".offsite-manifest",
            "2026-11-26t013000Z",
            "+026-11-26T013000Z",
        ] {
            assert!(SnapshotId::parse(bad).is_none(), "{bad}");
        }
        let t: Timestamp = "2026-11-26T01:30:00.9Z".parse().unwrap();
        assert_eq!(SnapshotId::at(t), s);
    }

    #[test]
    fn retention_keeps_newest_per_period() {
        // 60 nightly snapshots plus three extra runs on the last day.
        let start: Timestamp = "2026-09-01T01:30:00Z".parse().unwrap();
        let mut snaps: Vec<SnapshotId> = (0..60)
            .map(|d| SnapshotId::at(start + jiff::SignedDuration::from_hours(24 * d)))
            .collect();
        let last = *snaps.last().unwrap();
        snaps.push(last.next());
        snaps.push(last.next().next());
        let policy = Retention {
            last: 1,
            daily: 7,
            weekly: 4,
            monthly: 3,
            yearly: 0,
        };
        let del = to_delete(&snaps, &policy);
        let kept: Vec<SnapshotId> = snaps.iter().filter(|s| !del.contains(s)).copied().collect();
        // 7 days (newest of the last day counts once), weekly and monthly add older ones.
        assert!(kept.contains(&last.next().next()));
        assert!(!kept.contains(&last), "older runs of the same day go");
        assert_eq!(
            kept.iter()
                .filter(
                    |s| s.timestamp() > last.timestamp() - jiff::SignedDuration::from_hours(24 * 7)
                )
                .count(),
            7
        );
        assert!(
            kept.contains(&id("2026-09-30T013000Z")),
            "the newest of September is kept by the monthly rule"
        );
        assert!(kept.len() <= 7 + 4 + 3);
        // Nothing to delete when the policy is generous.
        let keep_all = Retention {
            last: 100,
            ..policy
        };
        assert!(to_delete(&snaps, &keep_all).is_empty());
    }
}
