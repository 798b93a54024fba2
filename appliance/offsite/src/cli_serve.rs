//! `offsite serve`: the appliance's long-running process: the nightly scheduler and the admin page
//! (`[web]` in the config). Every event is a line on stderr. SIGTERM or Ctrl-C stops it, cancelling a run
//! in progress (its snapshot stays incomplete and is pruned by a later run).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use backup::{BackupOptions, Config};
use clap::Args;
use service::{Options, SystemClock};

/// The folder `offsite serve` without `--config` works in (below the current folder).
pub const DEMO_DIR: &str = "offsite-data";

#[derive(Args)]
pub struct ServeArgs {
    /// The config file (see docs/CONFIG.md; `offsite init` writes one). Without it: the embedded demo
    /// default in `./offsite-data/` (made on first start: a demo share and a folder target).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Passphrase file, for a passphrase-protected key file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Where the admin page listens, instead of the config's `[web] listen` (`lan:PORT` or ADDRESS:PORT).
    #[arg(long, value_name = "ADDRESS")]
    listen: Option<String>,
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

/// The embedded default: `<dir>/offsite.toml` with a demo share of a few files and a folder target, all
/// in `dir`, which is also the only data volume the page may pick folders from. No key yet: the page's
/// first-run setup creates or imports it.
fn demo_config(dir: &Path) -> Result<PathBuf> {
    let file = dir.join("offsite.toml");
    if file.exists() {
        return Ok(file);
    }
    let demo = dir.join("demo");
    let target = dir.join("target");
    for d in [&demo.join("documents"), &demo.join("photos"), &target] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let samples: [(&str, String); 3] = [
        (
            "README.txt",
            "A demo share of offsite. Put files here, then press \"Run now\" on the admin page.\n"
                .into(),
        ),
        (
            "documents/notes.md",
            "# Notes\n\nEvery night this folder goes off-site, sealed.\n".repeat(20),
        ),
        (
            "photos/pixels.txt",
            (0..4000u32)
                .map(|i| format!("{:08x}\n", i.wrapping_mul(2_654_435_761)))
                .collect(),
        ),
    ];
    for (name, text) in samples {
        let p = demo.join(name);
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let utf8 = |p: &Path| {
        p.to_str()
            .map(crate::cli_backup::toml_string)
            .with_context(|| format!("{}: the demo folder's path must be UTF-8", p.display()))
    };
    let text = backup::config::DEFAULT_CONFIG
        .replace("\"@TARGET@\"", &utf8(&target)?)
        .replace(
            "@SHARES@",
            &format!("\n[[share]]\nname = \"demo\"\npath = {}\n", utf8(&demo)?),
        )
        .replacen(
            "[web]\n",
            &format!("[web]\ndata_volumes = [{}]\n", utf8(dir)?),
            1,
        );
    Config::parse(&file, &text).map_err(anyhow::Error::msg)?;
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("offsite: wrote the demo config {}", file.display());
    Ok(file)
}

/// Config bundles on USB keys mounted where `[usb] watch` says are staged on the page (never applied
/// without an admin). The watcher sleeps until the kernel reports a mount.
fn watch_usb(patterns: &[String], app: &Arc<web::App>) -> Result<()> {
    let app = Arc::downgrade(app);
    usb::watch(
        usb::WatchOptions {
            patterns: patterns.to_vec(),
            file_name: web::BUNDLE_FILE.into(),
            max_len: backup::bundle_io::MAX_BUNDLE_FILE,
        },
        move |found| {
            let Some(app) = app.upgrade() else {
                return false;
            };
            eprintln!(
                "offsite: USB key at {}: found {}; staged on the admin page if it is a config bundle",
                found.mount_point.display(),
                found.file.display()
            );
            app.stage_bundle(found.file, found.bytes);
            true
        },
    )
    .map_err(anyhow::Error::msg)?;
    eprintln!(
        "offsite: watching for config bundles on USB keys mounted at {}",
        patterns.join(", ")
    );
    Ok(())
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let file = match a.config {
        Some(f) => f,
        None => demo_config(&crate::cli_backup::absolute(Path::new(DEMO_DIR))?)?,
    };
    let config = Config::load(&file).map_err(anyhow::Error::msg)?;
    let passphrase = crate::cli_backup::read_passphrase(a.passphrase_file.as_deref())?;
    // The key is checked now (a wrong passphrase should not wait for the night), and names the jitter.
    // A box without a key yet gets it from the page; runs fail with a clear message until then.
    let salt = if config.key_file.exists() {
        seal::MasterKey::load(&config.key_file, passphrase.as_deref())
            .with_context(|| format!("key file {}", config.key_file.display()))?
            .key_id()
            .to_vec()
    } else {
        eprintln!(
            "offsite: no master key yet ({}): create or import it on the admin page",
            config.key_file.display()
        );
        config.state_dir.as_os_str().as_encoded_bytes().to_vec()
    };
    let config_web = config.web.clone();
    let usb = config.usb.clone();
    let state_dir = config.state_dir.clone();
    let web_passphrase = passphrase.clone();
    // The backup commands' runtime: one thread for the tasks. The page's event stream, the notifier and
    // the console printer share that thread with a running backup; they cannot lose a run's start or end
    // however far behind they fall (`service::events`), and the page's Argon2id runs off it.
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
                salt,
                backup: BackupOptions {
                    passphrase,
                    ..BackupOptions::default()
                },
            },
        );
        // Failed (and, if asked, successful) runs are told by webhook and/or mail ([notify]).
        let _notifier = notify::spawn(handle.clone());
        if config_web.enabled {
            let listen = listen_address(a.listen.as_deref().unwrap_or(&config_web.listen))?;
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
                eprintln!("offsite: (the browser warns about the self-signed certificate: check the fingerprint above, then accept it)");
            }
            if usb.enabled {
                watch_usb(&usb.watch, &page.app)?;
            }
        }
        let tz = jiff::tz::TimeZone::system();
        let printer = tokio::spawn(async move {
            loop {
                let Some(e) = events.recv().await else {
                    return;
                };
                if let Some(line) = e.describe(&tz) {
                    eprintln!("offsite: {line}");
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
