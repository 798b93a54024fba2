//! The config parser's fuzzer, shared by `examples/fuzz_config.rs` (long runs) and
//! `tests/fuzz_config.rs` (a fixed-seed smoke run in every test run).
//!
//! Inputs: real config files (the documented examples and awkward ones) mutated at the byte, token and line
//! level. Properties: `Config::parse` never panics and, when it accepts a text, the config it returns
//! writes back (`to_toml`) to a text that parses to the same settings (or `to_toml` says why not).

use std::path::Path;

use backup::Config;

pub const SEEDS: &[&str] = &[
    "state_dir = \"state\"\nkey_file = \"/k\"\n[target]\npath = \"/backup\"\n",
    r#"state_dir = "state"
key_file = "/etc/offsite/master.key"
[target]
host = "backup.example.net"
port = 2222
user = "nas"
path = "backups/box"
identity_file = "ssh/id_ed25519"
known_hosts = "ssh/known_hosts"
rsync_path = "rrsync"
bwlimit_kbps = 500
timeout_secs = 60
[schedule]
at = "02:15"
jitter_minutes = 10
retry_minutes = 20
max_attempts = 3
enabled = false
[web]
listen = "127.0.0.1:9443"
data_volumes = ["/srv", "data"]
[usb]
enabled = true
watch = ["/media/*", "/run/media/*/*"]
[notify]
on_success = true
webhook = "https://ntfy.example/offsite"
[notify.smtp]
host = "mail.example.net"
tls = "starttls"
user = "nas"
password_file = "smtp-password"
from = "nas@example.net"
to = ["me@example.net"]
[[share]]
name = "photos"
path = "/srv/photos"
exclude = ["*.tmp", "[x] #y", "--weird name", "/cache/", "a/***"]
schedule = "03:00"
retention = { daily = 3, weekly = 0, monthly = 0 }
[[share]]
name = "plain"
path = "plain"
encrypt = false
encrypt_names = false
compress = false
"#,
];

/// Tokens spliced into inputs: keys, values and TOML syntax that reach the validators.
const TOKENS: &[&str] = &[
    "[[share]]\nname = \"x\"\npath = \"/x\"\n",
    "[target]\n",
    "host = \"h\"\n",
    "port = 0\n",
    "port = 99999999\n",
    "at = \"25:61\"\n",
    "at = \"\"\n",
    "jitter_minutes = 4294967295\n",
    "retention = { last = 18446744073709551615 }\n",
    "exclude = [\"[\"]\n",
    "exclude = [\"\\u0000\"]\n",
    "watch = [\"relative\"]\n",
    "watch = [\"/a/../b\"]\n",
    "name = \"../etc\"\n",
    "name = \"\"\n",
    "path = \"\"\n",
    "\"\\uD800\"",
    "'''",
    "\"\"\"",
    "= =",
    "[",
    "]]",
    "{",
    "#",
    "\n",
    "\\",
    "1e400",
    "-0",
    "inf",
    "nan",
    "1979-05-27T07:32:00Z",
];

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One mutated input.
pub fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut v = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.next_u64() as u8;
            }
            1 => {
                let end = (at + rng.below(40)).min(v.len());
                v.drain(at..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            3 => {
                // A line repeated (duplicate keys and tables).
                let lines: Vec<&[u8]> = v.split(|&b| b == b'\n').collect();
                let l = lines[rng.below(lines.len())].to_vec();
                v.splice(at..at, l.into_iter().chain(std::iter::once(b'\n')));
            }
            4 => {
                let n = rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, bytes);
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Runs one input; `Err` describes a property that failed (a panic propagates).
pub fn check(input: &[u8]) -> Result<bool, String> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Ok(false);
    };
    let file = Path::new("/fuzz/offsite.toml");
    let Ok(c) = Config::parse(file, text) else {
        return Ok(false);
    };
    let Ok(out) = c.to_toml() else {
        return Ok(true);
    };
    let back = Config::parse(file, &out).map_err(|e| {
        format!("accepted, written back, refused: {e}\n--- input\n{text}\n--- written\n{out}")
    })?;
    let same = back.state_dir == c.state_dir
        && back.key_file == c.key_file
        && back.target == c.target
        && back.schedule == c.schedule
        && back.web == c.web
        && back.notify == c.notify
        && back.usb == c.usb
        && back.shares.len() == c.shares.len()
        && back.shares.iter().zip(&c.shares).all(|(a, b)| {
            (a.name == b.name)
                && a.path == b.path
                && a.encrypt == b.encrypt
                && a.encrypt_names == b.encrypt_names
                && a.compress == b.compress
                && a.exclude == b.exclude
                && a.retention == b.retention
                && a.schedule == b.schedule
        });
    if !same {
        return Err(format!(
            "accepted, written back, read back different\n--- input\n{text}\n--- written\n{out}"
        ));
    }
    Ok(true)
}
