//! The scheduler's rules, driven by an explicit clock.

use super::*;

/// Europe/Berlin as a POSIX rule (no tz database needed): CET, CEST from the last Sunday of March 02:00
/// to the last Sunday of October 03:00.
fn berlin() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
}

fn at(tz: &TimeZone, s: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = s.parse().unwrap();
    dt.to_zoned(tz.clone()).unwrap().timestamp()
}

fn local(tz: &TimeZone, t: Timestamp) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn policy(at: &str) -> Policy {
    Policy::nightly(Window::parse(at, 0).unwrap())
}

const RUN: SignedDuration = SignedDuration::from_mins(10);

/// Runs the scheduler from `start` to `until`: every due run takes ten minutes and succeeds unless
/// `fails` says so. Returns the runs: (night, local start, reason).
fn simulate(
    tz: &TimeZone,
    policy: &Policy,
    state: &mut SlotState,
    start: Timestamp,
    until: Timestamp,
    fails: &dyn Fn(Timestamp) -> bool,
) -> Vec<(String, String, Reason)> {
    let mut runs = Vec::new();
    let mut now = start;
    loop {
        let due = next_due(now, start, tz, policy, state, b"box");
        if due.at > until {
            return runs;
        }
        now = now.max(due.at);
        let end = now + RUN;
        state.record(due.night, now, end, !fails(now));
        runs.push((due.night.to_string(), local(tz, now), due.reason));
        now = end;
    }
}

#[test]
fn a_night_runs_once_at_its_window() {
    let tz = berlin();
    let p = policy("01:30");
    let mut s = SlotState::default();
    let runs = simulate(
        &tz,
        &p,
        &mut s,
        at(&tz, "2026-06-01T00:00"),
        at(&tz, "2026-06-03T23:00"),
        &|_| false,
    );
    assert_eq!(
        runs,
        [
            (
                "2026-06-01".into(),
                "2026-06-01 01:30 CEST".into(),
                Reason::Window
            ),
            (
                "2026-06-02".into(),
                "2026-06-02 01:30 CEST".into(),
                Reason::Window
            ),
            (
                "2026-06-03".into(),
                "2026-06-03 01:30 CEST".into(),
                Reason::Window
            ),
        ]
    );
}

#[test]
fn a_missed_night_runs_soon_after_boot_once() {
    let tz = berlin();
    let p = policy("01:30");
    // Last success three nights ago; the box comes back at 09:00.
    let mut s = SlotState::default();
    s.record(
        "2026-06-01".parse().unwrap(),
        at(&tz, "2026-06-01T01:30"),
        at(&tz, "2026-06-01T01:40"),
        true,
    );
    let boot = at(&tz, "2026-06-04T09:00");
    let runs = simulate(&tz, &p, &mut s, boot, at(&tz, "2026-06-05T12:00"), &|_| {
        false
    });
    assert_eq!(
        runs,
        [
            (
                "2026-06-04".into(),
                "2026-06-04 09:05 CEST".into(),
                Reason::CatchUp
            ),
            (
                "2026-06-05".into(),
                "2026-06-05 01:30 CEST".into(),
                Reason::Window
            ),
        ]
    );
    // Booted before the window: nothing to catch up, the window is awaited.
    let mut s2 = SlotState::default();
    s2.record(
        "2026-06-03".parse().unwrap(),
        at(&tz, "2026-06-03T01:30"),
        at(&tz, "2026-06-03T01:40"),
        true,
    );
    let due = next_due(
        at(&tz, "2026-06-04T00:10"),
        at(&tz, "2026-06-04T00:10"),
        &tz,
        &p,
        &s2,
        b"box",
    );
    assert_eq!(
        (local(&tz, due.at), due.reason),
        ("2026-06-04 01:30 CEST".into(), Reason::Window)
    );
}

#[test]
fn dst_changes_neither_skip_nor_double_a_night() {
    let tz = berlin();
    for window in ["00:30", "01:30", "02:30", "03:30", "23:30"] {
        let p = policy(window);
        for (from, to) in [
            ("2026-03-26T12:00", "2026-04-01T12:00"),
            ("2026-10-22T12:00", "2026-10-28T12:00"),
        ] {
            let mut s = SlotState::default();
            let runs = simulate(&tz, &p, &mut s, at(&tz, from), at(&tz, to), &|_| false);
            let nights: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
            // Every date whose window lies in the simulated span, once, in order.
            let mut want = Vec::new();
            let mut d: Date = from[..10].parse::<Date>().unwrap().yesterday().unwrap();
            while d <= to[..10].parse().unwrap() {
                let w = window_at(d, &tz, &p.window, b"box");
                if at(&tz, from) <= w && w <= at(&tz, to) {
                    want.push(d.to_string());
                }
                d = d.tomorrow().unwrap();
            }
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            assert_eq!(nights, want, "window {window}, {from}..{to}: {runs:?}");
        }
    }
    // The window inside the skipped hour moves past the gap; the doubled hour's first occurrence is used.
    let w = Window::parse("02:30", 0).unwrap();
    assert_eq!(
        local(
            &tz,
            window_at("2026-03-29".parse().unwrap(), &tz, &w, b"box")
        ),
        "2026-03-29 03:30 CEST"
    );
    assert_eq!(
        local(
            &tz,
            window_at("2026-10-25".parse().unwrap(), &tz, &w, b"box")
        ),
        "2026-10-25 02:30 CEST"
    );
}

#[test]
fn failures_retry_with_back_off_then_wait_for_the_next_night() {
    let tz = berlin();
    let p = policy("01:30");
    let mut s = SlotState::default();
    let night_of_june_2 = at(&tz, "2026-06-02T00:00")..at(&tz, "2026-06-03T00:00");
    let runs = simulate(
        &tz,
        &p,
        &mut s,
        at(&tz, "2026-06-02T00:00"),
        at(&tz, "2026-06-03T12:00"),
        &|t| night_of_june_2.contains(&t),
    );
    let times: Vec<(&str, Reason)> = runs.iter().map(|r| (r.1.as_str(), r.2)).collect();
    assert_eq!(
        times,
        [
            ("2026-06-02 01:30 CEST", Reason::Window),
            // ends 01:40, +15 min
            ("2026-06-02 01:55 CEST", Reason::Retry),
            // ends 02:05, +30 min
            ("2026-06-02 02:35 CEST", Reason::Retry),
            // ends 02:45, +1 h
            ("2026-06-02 03:45 CEST", Reason::Retry),
            // ends 03:55, +2 h
            ("2026-06-02 05:55 CEST", Reason::Retry),
            // five attempts: the next night starts afresh (and succeeds)
            ("2026-06-03 01:30 CEST", Reason::Window),
        ]
    );
    assert_eq!(s.failures, 0);
    assert_eq!(s.done_night, Some("2026-06-03".parse().unwrap()));
    // A retry never runs into the next night's window.
    let mut s = SlotState::default();
    s.record(
        "2026-06-02".parse().unwrap(),
        at(&tz, "2026-06-02T01:00"),
        at(&tz, "2026-06-03T01:20"),
        false,
    );
    let due = next_due(
        at(&tz, "2026-06-03T01:20"),
        at(&tz, "2026-06-01T00:00"),
        &tz,
        &p,
        &s,
        b"box",
    );
    assert_eq!(
        (local(&tz, due.at), due.reason),
        ("2026-06-03 01:30 CEST".into(), Reason::Window)
    );
}

#[test]
fn jitter_is_bounded_and_fixed_per_box_and_night() {
    let tz = berlin();
    let w = Window::parse("01:30", 30).unwrap();
    let base = at(&tz, "2026-06-10T01:30");
    let mut seen = std::collections::HashSet::new();
    for salt in [&b"box-a"[..], b"box-b", b"box-c", b"box-d"] {
        let t = window_at("2026-06-10".parse().unwrap(), &tz, &w, salt);
        let off = t.duration_since(base);
        assert!(off.abs() <= SignedDuration::from_mins(30), "{off:?}");
        assert_eq!(t, window_at("2026-06-10".parse().unwrap(), &tz, &w, salt));
        seen.insert(t);
    }
    assert!(seen.len() > 1, "boxes spread out");
    // With jitter the night is still counted once.
    let mut s = SlotState::default();
    let p = Policy::nightly(w);
    let runs = simulate(
        &tz,
        &p,
        &mut s,
        at(&tz, "2026-06-01T00:00"),
        at(&tz, "2026-06-10T00:00"),
        &|_| false,
    );
    let nights: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(nights.len(), 9, "{runs:?}");
    let mut sorted = nights.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 9);
}

#[test]
fn windows_parse_strictly() {
    assert!(Window::parse("01:30", 0).is_ok());
    assert!(Window::parse("1:30", 0).is_ok());
    for bad in ["", "01", "24:00", "01:60", "1:3", "a:bc", "01:30:00"] {
        assert!(Window::parse(bad, 0).is_err(), "{bad}");
    }
    assert!(Window::parse("01:30", 721).is_err());
}

#[test]
fn states_survive_a_restart_and_a_bad_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("schedule.json");
    assert!(load_states(&path).unwrap().is_empty());
    let mut states = States::new();
    let mut s = SlotState::default();
    s.record(
        "2026-06-02".parse().unwrap(),
        Timestamp::from_second(1_780_000_000).unwrap(),
        Timestamp::from_second(1_780_000_600).unwrap(),
        false,
    );
    states.insert("*".into(), s.clone());
    save_states(&path, &states).unwrap();
    assert_eq!(load_states(&path).unwrap()["*"], s);
    std::fs::write(&path, b"{not json").unwrap();
    let e = load_states(&path).unwrap_err().to_string();
    assert!(e.contains("schedule.json"), "{e}");
}
