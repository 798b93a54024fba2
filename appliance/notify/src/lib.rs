//! `notify` (package `offsite-notify`): tells the owner about runs of `offsite serve` (`[notify]` in the
//! config, `docs/CONFIG.md`).
//!
//! * [`send`] — one [`Message`] to every configured channel: a JSON POST to a webhook ([`webhook`]) and/or
//!   a mail over SMTP with TLS ([`mail`]); each channel has its own timeout ([`TIMEOUT`]).
//! * [`spawn`] — listens to the service's events and, when a run ends, decides and sends: a failed or
//!   partial run always, a successful one when `on_success` is set, a cancelled run or a dry run never.
//!   The config is read from the service's handle at that moment (the page can change it).
//!
//! Sending never holds up the service: the service only broadcasts its events, and every message is sent
//! from its own task, so a webhook that hangs delays nothing but itself. Failures are logged with
//! `tracing::warn!`, naming the channel and the host — never the password, and never the webhook's URL
//! beyond its host (a URL often carries a token).
//!
//! What a message says ([`Message::for_run`]): the box, the run's status and error, and per share its
//! status, its counts and its error — share names and counts, never the names of the files that failed
//! (they can say more than the owner wants a mail provider or a push service to read).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backup::config::NotifyConfig;
use serde::Serialize;
use service::Event;

pub mod mail;
pub mod webhook;

/// How long one channel may take to deliver one message (connect, TLS, request, answer).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What is said. `status` is `failed`, `partial`, `ok` or `test`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// One line: the subject of a mail, the title of a push notification.
    pub title: String,
    /// A few lines of plain text.
    pub text: String,
    pub status: String,
    /// The same facts for machines (the webhook's `offsite` object): box, slot, error, shares with their
    /// status and counts.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A channel that could not deliver: which one, to which host, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyError {
    /// One line per failed channel (`webhook ntfy.example.net: …`, `smtp mail.example.net:465: …`).
    pub failures: Vec<String>,
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() {
            return f.write_str("no notification channel is configured");
        }
        f.write_str(&self.failures.join("; "))
    }
}

impl std::error::Error for NotifyError {}

/// What tests (and nothing else) change about sending.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per channel and message.
    pub timeout: Duration,
    /// Trusted in addition to the built-in roots by the webhook's HTTPS (a test's self-signed server).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: TIMEOUT,
            extra_roots: Vec::new(),
        }
    }
}

/// Whether `config` has any channel at all.
pub fn configured(config: &NotifyConfig) -> bool {
    config.webhook.is_some() || config.smtp.is_some()
}

/// Sends `message` to every channel of `config` (all are tried, at the same time); the error lists the
/// ones that failed. With no channel configured that is an error too (the page's test button says so).
pub async fn send(config: &NotifyConfig, message: &Message) -> Result<(), NotifyError> {
    send_with(config, message, &Options::default()).await
}

/// [`send`] with other [`Options`].
pub async fn send_with(
    config: &NotifyConfig,
    message: &Message,
    opts: &Options,
) -> Result<(), NotifyError> {
    if !configured(config) {
        return Err(NotifyError {
            failures: Vec::new(),
        });
    }
    let hook = async {
        match &config.webhook {
            None => None,
            Some(url) => {
                let r = tokio::time::timeout(opts.timeout, webhook::post(url, message, opts)).await;
                let host = webhook::describe(url);
                match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("webhook {host}: {e}")),
                    Err(_) => Some(format!(
                        "webhook {host}: no answer within {} s",
                        opts.timeout.as_secs()
                    )),
                }
            }
        }
    };
    let smtp = async {
        match &config.smtp {
            None => None,
            Some(m) => {
                let r = tokio::time::timeout(opts.timeout, mail::send(m, message, opts)).await;
                let host = mail::describe(m);
                match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("smtp {host}: {e}")),
                    Err(_) => Some(format!(
                        "smtp {host}: no answer within {} s",
                        opts.timeout.as_secs()
                    )),
                }
            }
        }
    };
    let (a, b) = tokio::join!(hook, smtp);
    let failures: Vec<String> = a.into_iter().chain(b).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(NotifyError { failures })
    }
}

/// Whether a run that ended with `status` is told, under `config`.
pub fn wanted(config: &NotifyConfig, status: &str) -> bool {
    match status {
        "failed" | "partial" => true,
        "ok" => config.on_success,
        // cancelled (by the owner, who knows), dry_run (nothing happened), anything new: no.
        _ => false,
    }
}

/// This box's name (for the title), `offsite` if it has none.
pub fn box_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "offsite".into())
}

/// Starts listening to `handle`'s events: on each `RunFinished` that [`wanted`] says is told, builds a
/// [`Message`] (with the run's newest report in `<state_dir>/reports/`) and sends it from a task of its
/// own. Runs until aborted or until the runtime ends.
pub fn spawn(handle: service::Handle) -> tokio::task::JoinHandle<()> {
    let mut events = handle.subscribe();
    tokio::spawn(async move {
        // When the run being told about started (a report older than that is another run's).
        let mut started: Option<SystemTime> = None;
        loop {
            // A run's start and end always come (only progress ticks may be thinned).
            let Some(event) = events.recv().await else {
                return;
            };
            match event {
                Event::RunStarted { .. } => started = Some(SystemTime::now()),
                Event::RunFinished {
                    slot,
                    status,
                    error,
                } => {
                    let config = handle.config();
                    let since = started.take();
                    if !wanted(&config.notify, &status) || !configured(&config.notify) {
                        continue;
                    }
                    tokio::spawn(tell(config, slot, status, error, since));
                }
                _ => {}
            }
        }
    })
}

async fn tell(
    config: Arc<backup::Config>,
    slot: String,
    status: String,
    error: Option<String>,
    since: Option<SystemTime>,
) {
    let state_dir = config.state_dir.clone();
    // Reading a report is a small file read: off the runtime's threads all the same.
    let report = tokio::task::spawn_blocking(move || newest_report(&state_dir, since))
        .await
        .ok()
        .flatten();
    let message = Message::for_run(
        &box_name(),
        &slot,
        &status,
        error.as_deref(),
        report.as_ref(),
    );
    match send(&config.notify, &message).await {
        Ok(()) => tracing::info!(status = %status, "notification sent"),
        Err(e) => tracing::warn!("notification about a {status} run not sent: {e}"),
    }
}

/// The newest run report in `<state_dir>/reports/`, if it was written at or after `since` (less a
/// second of clock granularity).
pub fn newest_report(state_dir: &Path, since: Option<SystemTime>) -> Option<serde_json::Value> {
    let dir = state_dir.join("reports");
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()?;
    if let Some(since) = since {
        let modified = std::fs::metadata(&newest).and_then(|m| m.modified()).ok()?;
        let since = since.checked_sub(Duration::from_secs(1)).unwrap_or(since);
        if modified < since {
            return None;
        }
    }
    let bytes = std::fs::read(&newest).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Errors are cut to this many characters (a message is a glance, the page has the rest).
const MAX_ERROR: usize = 300;

fn cut(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MAX_ERROR) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Message {
    /// The message about a run that ended: `slot` and `status` from the service's `RunFinished`, `report`
    /// the run's report (as saved in `<state_dir>/reports/`) when there is one. Share names and counts,
    /// the errors (cut to 300 characters); never the names of skipped files.
    pub fn for_run(
        box_name: &str,
        slot: &str,
        status: &str,
        error: Option<&str>,
        report: Option<&serde_json::Value>,
    ) -> Message {
        let title = match status {
            "failed" => format!("offsite on {box_name}: backup FAILED"),
            "partial" => format!("offsite on {box_name}: backup done, some files skipped"),
            "ok" => format!("offsite on {box_name}: backup done"),
            other => format!("offsite on {box_name}: backup {other}"),
        };
        let run = match slot {
            "now" => "The run started by hand".to_string(),
            "*" => "The nightly run".to_string(),
            s => format!("The nightly run of {s}"),
        };
        let mut lines = vec![format!("{run} ended: {status}.")];
        let mut fields = serde_json::Map::new();
        fields.insert("box".into(), box_name.into());
        fields.insert("slot".into(), slot.into());
        fields.insert("status".into(), status.into());
        // With a report, the shares' errors are in their lines; the run's own error is the report's.
        let run_error = match report {
            Some(r) => r.get("error").and_then(|e| e.as_str()),
            None => error,
        };
        if let Some(e) = run_error {
            lines.push(format!("Error: {}", cut(e)));
            fields.insert("error".into(), cut(e).into());
        }
        let mut shares = Vec::new();
        let mut skipped_total = 0u64;
        for s in report
            .and_then(|r| r.get("shares"))
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let name = s.get("share").and_then(|v| v.as_str()).unwrap_or("?");
            let st = s.get("status").and_then(|v| v.as_str()).unwrap_or("?");
            let counter = |k: &str| {
                s.get("counters")
                    .and_then(|c| c.get(k))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            };
            let (files, bytes, skipped) = (counter("files"), counter("bytes"), counter("failed"));
            skipped_total += skipped;
            let share_error = s.get("error").and_then(|v| v.as_str()).map(cut);
            let mut line = format!("- {name}: {st}");
            if st != "failed" {
                line.push_str(&format!(", {} files", thousands(files)));
            }
            if skipped > 0 {
                line.push_str(&format!(", {} skipped", thousands(skipped)));
            }
            if let Some(e) = &share_error {
                line.push_str(&format!(": {e}"));
            }
            lines.push(line);
            let mut f = serde_json::Map::new();
            f.insert("share".into(), name.into());
            f.insert("status".into(), st.into());
            f.insert("files".into(), files.into());
            f.insert("bytes".into(), bytes.into());
            f.insert("skipped".into(), skipped.into());
            if let Some(snapshot) = s.get("snapshot").and_then(|v| v.as_str()) {
                f.insert("snapshot".into(), snapshot.into());
            }
            if let Some(e) = share_error {
                f.insert("error".into(), e.into());
            }
            shares.push(serde_json::Value::Object(f));
        }
        if let Some(started) = report
            .and_then(|r| r.get("started"))
            .and_then(|v| v.as_str())
        {
            fields.insert("started".into(), started.into());
        }
        if report.is_some() {
            fields.insert("skipped".into(), skipped_total.into());
            fields.insert("shares".into(), shares.into());
        }
        if status == "partial" || status == "failed" {
            lines.push(
                "The run's report (and any skipped files) is in the admin page's history.".into(),
            );
        }
        Message {
            title,
            text: lines.join("\n"),
            status: status.into(),
            fields,
        }
    }

    /// The page's "send a test notification".
    pub fn test(box_name: &str) -> Message {
        let mut fields = serde_json::Map::new();
        fields.insert("box".into(), box_name.into());
        fields.insert("status".into(), "test".into());
        Message {
            title: format!("offsite on {box_name}: test notification"),
            text: "This is a test from the admin page: notifications reach you.".into(),
            status: "test".into(),
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_runs_are_told() {
        let mut c = NotifyConfig::default();
        assert!(wanted(&c, "failed"));
        assert!(wanted(&c, "partial"));
        assert!(!wanted(&c, "ok"));
        assert!(!wanted(&c, "cancelled"));
        assert!(!wanted(&c, "dry_run"));
        c.on_success = true;
        assert!(wanted(&c, "ok"));
        assert!(!wanted(&c, "cancelled"));
    }

    #[test]
    fn a_run_message_has_shares_and_counts_but_no_file_names() {
        let report = serde_json::json!({
            "started": "2026-05-01T01:30:00Z",
            "target": "nas@backup:/srv",
            "error": null,
            "shares": [
                {"share": "photos", "status": "partial", "error": null, "snapshot": "2026-05-01T013000Z",
                 "counters": {"files": 12345, "bytes": 99, "failed": 2},
                 "skipped": [{"path": "secret/tax-2025.pdf", "reason": "permission denied"}]},
                {"share": "docs", "status": "failed", "error": "connection reset",
                 "counters": {"files": 0, "bytes": 0, "failed": 0}, "skipped": []}
            ]
        });
        let m = Message::for_run(
            "nas1",
            "*",
            "failed",
            Some("connection reset"),
            Some(&report),
        );
        assert_eq!(m.title, "offsite on nas1: backup FAILED");
        assert!(
            m.text
                .contains("- photos: partial, 12,345 files, 2 skipped"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("- docs: failed: connection reset"),
            "{}",
            m.text
        );
        let all = format!(
            "{} {} {}",
            m.title,
            m.text,
            serde_json::Value::Object(m.fields.clone())
        );
        assert!(!all.contains("tax-2025"), "{all}");
        assert_eq!(m.fields["skipped"], 2);
        assert_eq!(m.fields["shares"][0]["files"], 12345);
    }

    #[test]
    fn errors_are_cut() {
        let long = "x".repeat(1000);
        let m = Message::for_run("b", "now", "failed", Some(&long), None);
        let line = m
            .text
            .lines()
            .find(|l| l.starts_with("Error: "))
            .expect("error line");
        assert_eq!(
            line.chars().count(),
            "Error: ".len() + MAX_ERROR + 1,
            "{line}"
        );
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
