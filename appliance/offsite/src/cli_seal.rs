//! `keygen`, `seal`, `unseal`, `seal-name`, `unseal-name`: the sealed format by hand.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use seal::{KdfParams, Keys, MasterKey, RelPath, SealOptions, Suite};

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the new key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Cipher suite: `auto` (AES if this CPU has AES instructions, else XChaCha20), `aes` or `chacha`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "aes", "chacha", "aes256ctr", "xchacha20"])]
    suite: String,
    /// Protect the key with the passphrase in this file (Argon2id); without it the key file is plain.
    #[arg(long, value_name = "F")]
    passphrase_file: Option<PathBuf>,
    /// Argon2id memory in KiB.
    #[arg(long, default_value_t = KdfParams::default().m_kib, requires = "passphrase_file")]
    kdf_memory_kib: u32,
    /// Argon2id passes.
    #[arg(long, default_value_t = KdfParams::default().t, requires = "passphrase_file")]
    kdf_passes: u32,
}

/// Key file and passphrase, shared by the commands that use a key.
#[derive(Args)]
pub struct KeyArgs {
    /// The master key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Passphrase file, for a passphrase-protected key.
    #[arg(long, value_name = "F")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct SealArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The file's path relative to its share root; the sealed file is bound to it.
    #[arg(long, value_name = "REL")]
    path: OsString,
    /// Do not deflate compressible chunks.
    #[arg(long)]
    no_compress: bool,
    /// Threads that seal chunks (the output is the same for any number); default: CPUs, at most 4.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Plaintext input (`-` for stdin).
    #[arg(default_value = "-")]
    input: PathBuf,
    /// Sealed output (`-` for stdout); a file is written under a temporary name and renamed when complete.
    #[arg(default_value = "-")]
    output: PathBuf,
}

#[derive(Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The file's path relative to its share root, as given when sealing.
    #[arg(long, value_name = "REL")]
    path: OsString,
    /// Replace OUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Sealed input (`-` for stdin).
    #[arg(default_value = "-")]
    input: PathBuf,
    /// Plaintext output (`-` for stdout). A file appears only once the whole input verified; for stdout the
    /// input is verified completely before the first byte is written (a piped input is first copied,
    /// still sealed, to a temporary file).
    #[arg(default_value = "-")]
    output: PathBuf,
}

#[derive(Args)]
pub struct SealNameArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Relative path to seal. Long components (over 127 bytes) also print `side DIR NAME CONTENT` lines:
    /// the side files a sealed tree needs next to them.
    rel: OsString,
}

#[derive(Args)]
pub struct UnsealNameArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Folder holding the sealed tree, where long names' `.offsite-longname-*` side files are read.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Sealed relative path.
    sealed_rel: String,
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// An output that exists and is not a regular file or folder: `/dev/null`, a FIFO, a terminal,
/// `/dev/stdout`. A rename cannot put bytes into one (it would replace the device node with a regular file),
/// so it is opened and written in place, like stdout.
fn special_output(p: &Path) -> Result<Option<File>> {
    match std::fs::metadata(p) {
        Ok(m) if !m.is_file() && !m.is_dir() => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .with_context(|| format!("opening {} for writing", p.display()))?;
            Ok(Some(f))
        }
        _ => Ok(None),
    }
}

fn read_passphrase(file: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut pass = zeroize::Zeroizing::new(
        std::fs::read(file)
            .with_context(|| format!("reading passphrase file {}", file.display()))?,
    );
    if pass.ends_with(b"\r\n") {
        let n = pass.len() - 2;
        pass.truncate(n);
    } else if pass.ends_with(b"\n") {
        let n = pass.len() - 1;
        pass.truncate(n);
    }
    if pass.is_empty() {
        bail!("passphrase file {} is empty", file.display());
    }
    Ok(pass)
}

impl KeyArgs {
    fn load(&self) -> Result<Keys> {
        let pass = self
            .passphrase_file
            .as_deref()
            .map(read_passphrase)
            .transpose()?;
        let master = MasterKey::load(&self.key, pass.as_ref().map(|p| p.as_slice()))?;
        Ok(master.derive_keys())
    }
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let suite = Suite::parse(&a.suite).context("unknown suite")?;
    let master = MasterKey::generate(suite)?;
    let pass = a
        .passphrase_file
        .as_deref()
        .map(read_passphrase)
        .transpose()?;
    let params = KdfParams {
        m_kib: a.kdf_memory_kib,
        t: a.kdf_passes,
        p: 1,
    };
    master.save_new(&a.key, pass.as_ref().map(|p| (p.as_slice(), params)))?;
    eprintln!(
        "wrote {} (suite {}, key id {}). Keep a copy off the box: without it nothing can be restored.",
        a.key.display(),
        suite,
        master.key_id_hex()
    );
    Ok(())
}

fn open_input(p: &Path) -> Result<Box<dyn Read>> {
    Ok(if is_dash(p) {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(p).with_context(|| format!("opening {}", p.display()))?)
    })
}

pub fn seal(a: SealArgs) -> Result<()> {
    let keys = a.key.load()?;
    let path = RelPath::from_os(&a.path)?;
    let options = SealOptions {
        compress: !a.no_compress,
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)));
    let input = BufReader::with_capacity(1 << 16, open_input(&a.input)?);
    let what = || format!("sealing {} as {}", a.input.display(), path);
    let run = |out: &mut dyn Write| {
        seal::seal_with_threads(&keys, &path, options, threads, input, out).with_context(what)
    };
    if is_dash(&a.output) {
        run(&mut BufWriter::with_capacity(1 << 16, io::stdout().lock()))?;
    } else if let Some(device) = special_output(&a.output)? {
        run(&mut BufWriter::new(device))?;
    } else {
        let mut tmp = seal::temp_file_beside(&a.output)
            .with_context(|| format!("creating a temporary file next to {}", a.output.display()))?;
        run(&mut BufWriter::new(tmp.as_file_mut()))?;
        tmp.as_file().sync_all().with_context(what)?;
        tmp.persist(&a.output)
            .with_context(|| format!("renaming into {}", a.output.display()))?;
    }
    Ok(())
}

pub fn unseal(a: UnsealArgs) -> Result<()> {
    let keys = a.key.load()?;
    let path = RelPath::from_os(&a.path)?;
    let what = || format!("unsealing {} (path {})", a.input.display(), path);
    let device = if is_dash(&a.output) {
        None
    } else if let Some(device) = special_output(&a.output)? {
        Some(device)
    } else {
        let input = BufReader::with_capacity(1 << 16, open_input(&a.input)?);
        seal::unseal_to_file(&keys, &path, input, &a.output, a.overwrite).with_context(what)?;
        return Ok(());
    };
    // Stdout, a pipe or a device cannot be renamed into place: verify everything first, then decrypt again
    // while writing.
    let mut file = if is_dash(&a.input) {
        let mut spool = tempfile::tempfile().context("creating a spool file for stdin")?;
        io::copy(&mut io::stdin().lock(), &mut spool).context("spooling stdin")?;
        spool
    } else {
        File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?
    };
    let sink: Box<dyn Write> = match device {
        Some(d) => Box::new(d),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, sink);
    seal::unseal_verified_first(&keys, &path, &mut file, &mut out).with_context(what)?;
    out.flush()
        .with_context(|| format!("writing to {}", a.output.display()))?;
    Ok(())
}

pub fn seal_name(a: SealNameArgs) -> Result<()> {
    let keys = a.key.load()?;
    let path = RelPath::from_os(&a.rel)?;
    let sealed = seal::names::seal_path(&keys, &path)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", sealed.path)?;
    for (dir, file, content) in &sealed.side_files {
        let dir = if dir.is_empty() { "." } else { dir.as_str() };
        writeln!(out, "side {dir} {file} {content}")?;
    }
    Ok(())
}

pub fn unseal_name(a: UnsealNameArgs) -> Result<()> {
    let keys = a.key.load()?;
    let root = a.root.clone();
    let plain = seal::names::unseal_path(&keys, &a.sealed_rel, |dir, file| {
        let root = root.as_ref()?;
        std::fs::read_to_string(root.join(dir).join(file)).ok()
    })
    .with_context(|| format!("unsealing name {}", a.sealed_rel))?;
    let mut out = io::stdout().lock();
    out.write_all(plain.as_os_str().as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}
