//! One admin: the password (Argon2id, in `<state_dir>/web/admin.json`, mode 0600), sessions, CSRF tokens and
//! a brake on guessing.
//!
//! * First run: no password yet. Setting it needs the one-time setup code that `offsite serve` prints on
//!   its console and log, so whoever reaches the page first on the LAN cannot take the box over.
//! * A session is a random 256-bit token in an `HttpOnly; Secure; SameSite=Strict` cookie, kept in memory
//!   only (a restart logs everyone out) and ending after 12 hours, or 1 hour without use.
//! * Every state-changing request must carry the session's CSRF token in the `X-CSRF-Token` header.
//! * Failed logins are slowed per client address: after the third, each attempt must wait twice as long
//!   as the one before (1 s, 2 s, … up to 5 minutes); too-early attempts get 429 without a password check.
//! * Nothing here logs or returns the password, its hash or a session token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::lock;

const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
const SESSION_IDLE: Duration = Duration::from_secs(3600);
const FREE_FAILURES: u32 = 3;
const MAX_WAIT: Duration = Duration::from_secs(300);
const MIN_PASSWORD: usize = 10;

/// The stored password: Argon2id with its parameters.
#[derive(Serialize, Deserialize)]
struct Admin {
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
    hash: String,
}

struct Session {
    csrf: String,
    created: Instant,
    used: Instant,
}

/// Why a login did not work.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Too many failures from this address: try again after this long.
    TooSoon(Duration),
    Wrong,
    /// No password was set yet.
    NotSetUp,
}

pub struct Auth {
    file: PathBuf,
    admin: Mutex<Option<Admin>>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    setup_code: String,
}

/// `n` random bytes as lowercase base32 (no padding).
pub fn random_token(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("system random number generator: {e}"))?;
    Ok(data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase())
}

fn argon2(m_kib: u32, t: u32, p: u32, password: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
    let params = argon2::Params::new(m_kib, t, p, Some(32)).map_err(|e| e.to_string())?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

impl Auth {
    /// Reads the admin file in `dir` (if any) and makes this start's setup code.
    pub fn open(dir: &Path) -> Result<Auth, String> {
        let file = dir.join("admin.json");
        let admin = match std::fs::read(&file) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| format!("{}: not an admin file: {e}", file.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        Ok(Auth {
            file,
            admin: Mutex::new(admin),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            setup_code: random_token(10)?,
        })
    }

    /// The one-time code needed to set the first password (`None` once a password is set).
    pub fn setup_code(&self) -> Option<&str> {
        self.needs_setup().then_some(self.setup_code.as_str())
    }

    pub fn needs_setup(&self) -> bool {
        lock(&self.admin).is_none()
    }

    /// Sets the first password; refused once one is set, or with a wrong setup code.
    pub fn set_first_password(&self, code: &str, password: &str) -> Result<(), String> {
        let mut admin = lock(&self.admin);
        if admin.is_some() {
            return Err("the admin password is already set".into());
        }
        if !constant_time_eq::constant_time_eq(code.trim().as_bytes(), self.setup_code.as_bytes()) {
            return Err(
                "wrong setup code (it is printed where offsite serve was started, and in its log)"
                    .into(),
            );
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(format!(
                "the password needs at least {MIN_PASSWORD} characters"
            ));
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
        // OWASP's m = 7 MiB, t = 5 (as strong as 19 MiB, t = 2): the page's memory stays small on a
        // 256 MB box, and glibc keeps what a login used.
        let (m_kib, t, p) = (7 * 1024, 5, 1);
        let hash = argon2(m_kib, t, p, password.as_bytes(), &salt)?;
        let a = Admin {
            m_kib,
            t,
            p,
            salt: hex(&salt),
            hash: hex(&hash),
        };
        let json = serde_json::to_vec_pretty(&a).map_err(|e| e.to_string())?;
        write_private(&self.file, &json)?;
        *admin = Some(a);
        Ok(())
    }

    fn check_password(&self, password: &str) -> Result<bool, LoginError> {
        let admin = lock(&self.admin);
        let a = admin.as_ref().ok_or(LoginError::NotSetUp)?;
        let salt = data_encoding::HEXLOWER
            .decode(a.salt.as_bytes())
            .unwrap_or_default();
        let want = data_encoding::HEXLOWER
            .decode(a.hash.as_bytes())
            .unwrap_or_default();
        let got =
            argon2(a.m_kib, a.t, a.p, password.as_bytes(), &salt).map_err(|_| LoginError::Wrong)?;
        Ok(!want.is_empty() && constant_time_eq::constant_time_eq(&got, &want))
    }

    /// Checks the password and opens a session: (session token, CSRF token).
    pub fn login(&self, from: IpAddr, password: &str) -> Result<(String, String), LoginError> {
        self.verify(from, password)?;
        self.open_session().map_err(|_| LoginError::Wrong)
    }

    /// Checks the password again for a grave action (exporting the keys), with the login's brake.
    pub fn verify(&self, from: IpAddr, password: &str) -> Result<(), LoginError> {
        let now = Instant::now();
        if let Some((n, last)) = lock(&self.failures).get(&from).copied()
            && n >= FREE_FAILURES
        {
            let wait = Duration::from_secs(1u64 << (n - FREE_FAILURES).min(9)).min(MAX_WAIT);
            let since = now.duration_since(last);
            if since < wait {
                return Err(LoginError::TooSoon(wait - since));
            }
        }
        if !self.check_password(password)? {
            let mut f = lock(&self.failures);
            let e = f.entry(from).or_insert((0, now));
            e.0 += 1;
            e.1 = now;
            return Err(LoginError::Wrong);
        }
        lock(&self.failures).remove(&from);
        Ok(())
    }

    /// A new session for the admin (after setting the first password, or a login).
    pub fn open_session(&self) -> Result<(String, String), String> {
        let token = random_token(32)?;
        let csrf = random_token(20)?;
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        s.retain(|_, v| {
            now.duration_since(v.created) < SESSION_MAX && now.duration_since(v.used) < SESSION_IDLE
        });
        s.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                created: now,
                used: now,
            },
        );
        Ok((token, csrf))
    }

    /// The session's CSRF token, if `token` is a live session (and marks it used).
    pub fn session(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        let v = s.get_mut(token)?;
        if now.duration_since(v.created) >= SESSION_MAX
            || now.duration_since(v.used) >= SESSION_IDLE
        {
            s.remove(token);
            return None;
        }
        v.used = now;
        Some(v.csrf.clone())
    }

    pub fn logout(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }
}

/// Writes a file readable by its owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| tmp.write_all(bytes))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    // The rename itself survives a power cut only once the folder is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_password_needs_the_code_then_login_is_slowed_after_failures() {
        let d = tempfile::tempdir().unwrap();
        let a = Auth::open(d.path()).unwrap();
        let code = a.setup_code().unwrap().to_owned();
        assert!(
            a.set_first_password("wrong", "long enough password")
                .is_err()
        );
        assert!(a.set_first_password(&code, "short").is_err());
        a.set_first_password(&code, "long enough password").unwrap();
        assert!(a.setup_code().is_none());
        assert!(
            a.set_first_password(&code, "another long password")
                .is_err()
        );
        // The stored file holds no password, is private, and survives a restart.
        let text = std::fs::read_to_string(d.path().join("admin.json")).unwrap();
        assert!(!text.contains("long enough"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("admin.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = Auth::open(d.path()).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (token, csrf) = a.login(ip, "long enough password").unwrap();
        assert_eq!(a.session(&token), Some(csrf));
        a.logout(&token);
        assert_eq!(a.session(&token), None);
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.login(ip, "guess"), Err(LoginError::Wrong));
        }
        // Now even the right password must wait; another address is not affected.
        assert!(matches!(
            a.login(ip, "long enough password"),
            Err(LoginError::TooSoon(_))
        ));
        assert!(
            a.login("192.0.2.8".parse().unwrap(), "long enough password")
                .is_ok()
        );
    }
}
