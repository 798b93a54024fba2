//! The remote `rsync --server` command line (rsync `options.c:server_options`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::error::{Error, Result};
use crate::handshake::CLIENT_INFO;

/// Most `--link-dest`/`--compare-dest` directories rsync accepts (`MAX_BASIS_DIRS`).
pub const MAX_BASIS_DIRS: usize = 20;

/// Alternate basis directories on the receiver (paths relative to the
/// destination, or absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltDest {
    /// `--link-dest`: unchanged files become hard links to these.
    Link(Vec<Vec<u8>>),
    /// `--compare-dest`: unchanged files are not copied at all.
    Compare(Vec<Vec<u8>>),
}

/// Options of a push that shape the server's command line.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--delete`: remove destination items not in the list.
    pub delete: bool,
    /// Send symlinks as symlinks (`-l`); otherwise they are skipped by the receiver.
    pub preserve_links: bool,
    /// `--link-dest` / `--compare-dest`.
    pub alt_dest: Option<AltDest>,
    /// `--partial-dir DIR`.
    pub partial_dir: Option<Vec<u8>>,
    /// `--timeout=N` seconds.
    pub timeout_secs: Option<u64>,
    /// `--modify-window=-1`: the receiver's quick check (and `--link-dest`'s) compares modification
    /// times to the nanosecond, not to the second (receivers from rsync 3.1.3 on; older ones compare
    /// seconds whatever is sent). Without it, a file rewritten within the same second at the same size
    /// is taken for unchanged.
    pub nanosecond_times: bool,
    /// Ask the server to send its messages in-band (`--no-msgs2stderr`) so
    /// they arrive as events; otherwise they go to its stderr.
    pub messages_in_band: bool,
    /// Extra arguments inserted before `.` (e.g. `--protocol=30`,
    /// `--checksum-seed=1`, debug flags).
    pub extra: Vec<OsString>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            delete: false,
            preserve_links: true,
            alt_dest: None,
            partial_dir: None,
            timeout_secs: None,
            nanosecond_times: true,
            messages_in_band: true,
            extra: Vec::new(),
        }
    }
}

/// Builds the arguments after the program name: `--server -rlpte.LsfxCIvu ... . DEST`.
pub fn server_args(o: &ServerOptions, dest: &[u8]) -> Result<Vec<OsString>> {
    if dest.is_empty() || dest.contains(&0) {
        return Err(Error::InvalidInput("invalid destination path".into()));
    }
    let mut a: Vec<OsString> = vec!["--server".into()];
    let mut letters = String::from("-r");
    if o.preserve_links {
        letters.push('l');
    }
    letters.push_str("pt");
    letters.push('e');
    letters.push_str(CLIENT_INFO);
    a.push(letters.into());
    if o.delete {
        a.push("--delete".into());
    }
    if let Some(p) = &o.partial_dir {
        if p.is_empty() || p.contains(&0) {
            return Err(Error::InvalidInput("invalid partial dir".into()));
        }
        a.push("--partial-dir".into());
        a.push(OsString::from_vec(p.clone()));
    }
    if let Some(alt) = &o.alt_dest {
        let (opt, dirs) = match alt {
            AltDest::Link(d) => ("--link-dest", d),
            AltDest::Compare(d) => ("--compare-dest", d),
        };
        if dirs.is_empty() || dirs.len() > MAX_BASIS_DIRS {
            return Err(Error::InvalidInput(format!(
                "{opt} needs 1..={MAX_BASIS_DIRS} directories"
            )));
        }
        for d in dirs {
            if d.is_empty() || d.contains(&0) {
                return Err(Error::InvalidInput(format!("invalid {opt} directory")));
            }
            a.push(opt.into());
            a.push(OsString::from_vec(d.clone()));
        }
    }
    if let Some(t) = o.timeout_secs {
        a.push(format!("--timeout={t}").into());
    }
    if o.nanosecond_times {
        a.push("--modify-window=-1".into());
    }
    if o.messages_in_band {
        a.push("--no-msgs2stderr".into());
    }
    a.extend(o.extra.iter().cloned());
    a.push(".".into());
    a.push(OsString::from_vec(dest.to_vec()));
    Ok(a)
}

/// Options of a pull or listing that shape the command line of the remote
/// `rsync --server --sender`.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Recurse into directories (`-r`); otherwise `-d` (the directory's
    /// entries without their contents: give the path with a trailing `/`).
    pub recursive: bool,
    /// Send symlinks as symlinks (`-l`); otherwise the server skips them.
    pub preserve_links: bool,
    /// `--timeout=N` seconds.
    pub timeout_secs: Option<u64>,
    /// Ask the server to send its messages in-band (`--no-msgs2stderr`).
    pub messages_in_band: bool,
    /// Extra arguments inserted before `.` (e.g. `--protocol=30`).
    pub extra: Vec<OsString>,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            recursive: true,
            preserve_links: true,
            timeout_secs: None,
            messages_in_band: true,
            extra: Vec::new(),
        }
    }
}

/// Builds the arguments of a remote sender:
/// `--server --sender -rlpte.LsfxCIvu ... . PATH...`.
///
/// A path ending in `/` transfers the directory's contents (names are
/// relative to it); without the slash the names start with its last component.
pub fn sender_args(o: &SenderOptions, paths: &[&[u8]]) -> Result<Vec<OsString>> {
    if paths.is_empty() {
        return Err(Error::InvalidInput("no remote path given".into()));
    }
    for p in paths {
        if p.is_empty() || p.contains(&0) {
            return Err(Error::InvalidInput("invalid remote path".into()));
        }
    }
    let mut a: Vec<OsString> = vec!["--server".into(), "--sender".into()];
    let mut letters = String::from(if o.recursive { "-r" } else { "-d" });
    if o.preserve_links {
        letters.push('l');
    }
    letters.push_str("pt");
    letters.push('e');
    letters.push_str(CLIENT_INFO);
    a.push(letters.into());
    if let Some(t) = o.timeout_secs {
        a.push(format!("--timeout={t}").into());
    }
    if o.messages_in_band {
        a.push("--no-msgs2stderr".into());
    }
    a.extend(o.extra.iter().cloned());
    a.push(".".into());
    a.extend(paths.iter().map(|p| OsString::from_vec(p.to_vec())));
    Ok(a)
}

/// Quotes one argument for a POSIX shell (single quotes; `'` becomes `'\''`).
/// Arguments made only of safe characters are left as they are.
pub fn shell_quote(arg: &[u8]) -> Vec<u8> {
    let safe = !arg.is_empty()
        && arg
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&c));
    if safe {
        return arg.to_vec();
    }
    let mut out = Vec::with_capacity(arg.len() + 2);
    out.push(b'\'');
    for &c in arg {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    out
}

/// Joins a program and its arguments into one shell command line (for SSH).
pub fn shell_command(program: &[u8], args: &[OsString]) -> Vec<u8> {
    let mut out = shell_quote(program);
    for a in args {
        out.push(b' ');
        out.extend_from_slice(&shell_quote(&a.clone().into_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_quoting() {
        let o = ServerOptions {
            delete: true,
            alt_dest: Some(AltDest::Link(vec![b"../prev".to_vec()])),
            timeout_secs: Some(30),
            ..ServerOptions::default()
        };
        let a = server_args(&o, b"/srv/it's here").unwrap();
        let cmd = shell_command(b"rsync", &a);
        assert_eq!(
            String::from_utf8(cmd).unwrap(),
            "rsync --server -rlpte.LsfxCIvu --delete --link-dest ../prev --timeout=30 \
             --modify-window=-1 --no-msgs2stderr . '/srv/it'\\''s here'"
        );
        assert_eq!(shell_quote(b""), b"''");
        let a = sender_args(&SenderOptions::default(), &[b"/srv/data/"]).unwrap();
        assert_eq!(
            String::from_utf8(shell_command(b"rsync", &a)).unwrap(),
            "rsync --server --sender -rlpte.LsfxCIvu --no-msgs2stderr . /srv/data/"
        );
        let o = SenderOptions {
            recursive: false,
            ..SenderOptions::default()
        };
        assert!(sender_args(&o, &[]).is_err());
        assert!(sender_args(&o, &[b"a\0b"]).is_err());
        assert_eq!(shell_quote(b"a\nb"), b"'a\nb'");
    }
}
