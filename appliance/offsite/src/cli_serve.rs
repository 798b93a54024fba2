//! `offsite serve`: the appliance's long-running process: the nightly scheduler and the admin page
//! (`[web]` in the config). Every event is a line on stderr. SIGTERM or Ctrl-C stops it, cancelling a run
//! in progress (its snapshot stays incomplete and is pruned by a later run).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use backup::{BackupOptions, Config};
use clap::Args;
use service::{Event, Options, SystemClock};

#[derive(Args)]
pub struct ServeArgs {
    /// The config file (see docs/CONFIG.md; `offsite init` writes one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Passphrase file, for a passphrase-protected key file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::Scheduled {
            slot,
            at,
            night,
            reason,
        } => {
            let local = at.to_zoned(jiff::tz::TimeZone::system());
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

/// `lan:PORT` → this box's LAN address (loopback if it has none), else the address as written.
fn listen_address(listen: &str) -> Result<SocketAddr> {
    match listen.strip_prefix("lan:") {
        Some(port) => {
            let port: u16 = port.parse().context("web.listen: port")?;
            let ip = web::lan_address().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            Ok(SocketAddr::new(ip, port))
        }
        None => listen.parse().context("web.listen"),
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let passphrase = crate::cli_backup::read_passphrase(a.passphrase_file.as_deref())?;
    // The key is checked now (a wrong passphrase should not wait for the night), and names the jitter.
    let key = seal::MasterKey::load(&config.key_file, passphrase.as_deref())
        .with_context(|| format!("key file {}", config.key_file.display()))?;
    let config_web = config.web.clone();
    let state_dir = config.state_dir.clone();
    let web_passphrase = passphrase.clone();
    let runtime = crate::cli_backup::runtime()?;
    runtime.block_on(async {
        let service::Started {
            handle,
            task,
            mut events,
        } = service::start(
            config,
            Options {
                clock: Arc::new(SystemClock),
                tz: jiff::tz::TimeZone::system(),
                salt: key.key_id().to_vec(),
                backup: BackupOptions {
                    passphrase,
                    ..BackupOptions::default()
                },
            },
        );
        if config_web.enabled {
            let listen = listen_address(&config_web.listen)?;
            let page = web::start(
                web::WebOptions {
                    listen,
                    state_dir: state_dir.clone(),
                    names: Vec::new(),
                    passphrase: web_passphrase,
                },
                handle.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            eprintln!("offsite: admin page: https://{}/", page.addr);
            eprintln!(
                "offsite: its certificate's SHA-256 fingerprint (compare it in the browser's warning): {}",
                page.fingerprint
            );
            if let Some(code) = &page.setup_code {
                eprintln!("offsite: first start: open the page and set the admin password with the setup code {code}");
            }
        }
        let printer = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let Some(line) = describe(&e) {
                            eprintln!("offsite: {line}");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("offsite: stopping");
        let _ = handle.send(service::Command::Shutdown).await;
        drop(handle);
        let _ = task.await;
        printer.abort();
        anyhow::Ok(())
    })
}
