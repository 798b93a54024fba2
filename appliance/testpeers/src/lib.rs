//! Test harness: a private, real OpenSSH server on 127.0.0.1.
//!
//! Used by the tests of several crates as a dev-dependency (`offsite-testpeers`). It needs
//! `/usr/sbin/sshd` and `ssh-keygen`
//! (Debian package `openssh-server`) and runs as the current user (root in CI).
//!
//! ```ignore
//! let sshd = testpeers::TestSshd::start();          // own host key, config, authorized_keys
//! let target = sshd.target();                      // offsite_ssh::SshTarget for it
//! // sshd.known_hosts holds "[127.0.0.1]:PORT ssh-ed25519 ..." for the host key.
//! // Dropping `sshd` kills the sshd it started (by pid) and removes the temp dir.
//! ```
//!
//! Remote commands run with `HOME` set to an empty dir in the temp dir (sshd `SetEnv`), so the
//! user's shell rc files (bash sources ~/.bashrc for ssh commands) do not pollute output.
//!
//! Only ever listens on and connects to 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offsite_ssh::SshTarget;

/// A running sshd, owned by the test.
pub struct TestSshd {
    /// Temp dir with everything (removed on drop).
    pub dir: tempfile::TempDir,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Host key (private; `.pub` beside it).
    pub host_key: PathBuf,
    /// Client key (ed25519, unencrypted) listed in `authorized_keys`.
    pub client_key: PathBuf,
    /// authorized_keys file used by the server.
    pub authorized_keys: PathBuf,
    /// known_hosts file trusting the host key for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// sshd log file.
    pub log: PathBuf,
    /// The user the tests run as (and log in as).
    pub user: String,
    child: Child,
}

/// Run `ssh-keygen` to make a key pair at `path` (`-t kind`, no passphrase unless given).
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "test", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let status = cmd.stdin(Stdio::null()).status().expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// `SHA256:...` fingerprint of a public key file, as `ssh-keygen -lf` prints it.
pub fn ssh_keygen_fingerprint(pub_path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_path)
        .output()
        .expect("run ssh-keygen -lf");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// Public key line (`type base64 comment`) of a `.pub` file.
pub fn read_pub(path: &Path) -> String {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(PathBuf::from(p))
        .unwrap()
        .trim()
        .to_string()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestSshd {
    /// Start an sshd with a fresh ed25519 host key and a fresh ed25519 client key.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Like [`start`](Self::start), with extra sshd_config lines.
    pub fn start_with_config(extra: &str) -> Self {
        Self::start_with(&[], extra)
    }

    /// Like [`start`](Self::start), with additional host keys of the given `ssh-keygen -t`
    /// types (at `hostkey_<type>`, offered after the ed25519 one; not in `known_hosts`) and
    /// extra sshd_config lines.
    pub fn start_with(extra_host_key_types: &[&str], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host_key = d.join("hostkey");
        let client_key = d.join("clientkey");
        keygen(&host_key, "ed25519", "");
        let mut extra = extra.to_string();
        for kind in extra_host_key_types {
            let path = d.join(format!("hostkey_{kind}"));
            keygen(&path, kind, "");
            extra.push_str(&format!("\nHostKey {}\n", path.display()));
        }
        keygen(&client_key, "ed25519", "");
        let authorized_keys = d.join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{}\n", read_pub(&client_key))).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // privilege separation dir
        let user = current_user();
        let log = d.join("sshd.log");
        // The remote shell is the user's: bash sources ~/.bashrc for ssh commands, and a
        // developer's rc files (pyenv, conda, banners...) would pollute stdout/stderr and slow
        // every command down. Point HOME at an empty dir in the temp dir instead.
        let home = d.join("home");
        std::fs::create_dir_all(&home).unwrap();

        // A port taken between picking and binding makes sshd exit: try again.
        for _ in 0..10 {
            let port = free_port();
            let config = d.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\n\
                     AuthorizedKeysFile {ak}\nPidFile {pid}\nUsePAM no\nStrictModes no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     AllowUsers {user}\nSetEnv HOME={home}\n{extra}\n",
                    hk = host_key.display(),
                    ak = authorized_keys.display(),
                    pid = d.join("sshd.pid").display(),
                    home = home.display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            let up = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                // Listening, and it is this sshd that listens: a port picked by a parallel test too would
                // answer through the other test's server, which later goes away ("connection refused").
                let listening = format!("Server listening on 127.0.0.1 port {port}.");
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening))
                    && child.try_wait().is_ok_and(|s| s.is_none())
                {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !up {
                continue;
            }
            let known_hosts = d.join("known_hosts");
            let mut fields = read_pub(&host_key)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>();
            fields.truncate(2);
            std::fs::write(
                &known_hosts,
                format!("[127.0.0.1]:{port} {}\n", fields.join(" ")),
            )
            .unwrap();
            return TestSshd {
                dir,
                port,
                host_key,
                client_key,
                authorized_keys,
                known_hosts,
                log,
                user,
                child,
            };
        }
        panic!(
            "sshd did not start; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Path inside the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A target for this server with the harness's client key and known_hosts, short timeouts.
    pub fn target(&self) -> SshTarget {
        let mut t = SshTarget::new(
            "127.0.0.1",
            self.user.clone(),
            &self.client_key,
            &self.known_hosts,
        )
        .with_port(self.port);
        t.connect_timeout = Duration::from_secs(10);
        t
    }

    /// Append a line (a public key, possibly with options) to authorized_keys.
    pub fn authorize(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// Fingerprint of the host key per `ssh-keygen -lf hostkey.pub`.
    pub fn host_fingerprint(&self) -> String {
        let mut p = self.host_key.as_os_str().to_owned();
        p.push(".pub");
        ssh_keygen_fingerprint(Path::new(&p))
    }

    /// Pid of the listening sshd (ours).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pids of all processes descending from our sshd (per-connection sshd processes and the
    /// commands they run), found through /proc.
    pub fn descendants(&self) -> Vec<u32> {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the ")" that closes the command name: state ppid ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
        let mut out = Vec::new();
        let mut frontier = vec![self.child.id()];
        while let Some(p) = frontier.pop() {
            for &(pid, ppid) in &parents {
                if ppid == p && !out.contains(&pid) {
                    out.push(pid);
                    frontier.push(pid);
                }
            }
        }
        out
    }

    /// The sshd log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        // Only our own processes: the listener we spawned and its descendants.
        let kids = self.descendants();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in kids {
            for sig in ["-CONT", "-KILL"] {
                let _ = Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
