//! The file list (rsync `flist.c`): entries, validation, the `f_name_cmp`
//! sort order and the wire encoding of `send_file_entry`.

use std::cmp::Ordering;

use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::codec;
use crate::error::{Error, Result};
use crate::mux::Conn;

/// `S_IFMT` and friends (Linux values, which are also rsync's wire values).
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// Longest path rsync accepts (`MAXPATHLEN` - 1).
pub const MAX_PATH: usize = 4095;

const XMIT_TOP_DIR: u32 = 1 << 0;
const XMIT_SAME_MODE: u32 = 1 << 1;
const XMIT_EXTENDED_FLAGS: u32 = 1 << 2;
const XMIT_SAME_UID: u32 = 1 << 3;
const XMIT_SAME_GID: u32 = 1 << 4;
const XMIT_SAME_NAME: u32 = 1 << 5;
const XMIT_LONG_NAME: u32 = 1 << 6;
const XMIT_SAME_TIME: u32 = 1 << 7;
const XMIT_HLINKED: u32 = 1 << 9;
const XMIT_USER_NAME_FOLLOWS: u32 = 1 << 10;
const XMIT_GROUP_NAME_FOLLOWS: u32 = 1 << 11;
const XMIT_IO_ERROR_ENDLIST: u32 = 1 << 12;
const XMIT_MOD_NSEC: u32 = 1 << 13;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of the given size.
    File {
        /// Size in bytes as announced in the file list.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link target, as raw bytes.
        target: Vec<u8>,
    },
}

/// What a [`FileEntry`]'s name can be made from: owned or shared bytes are taken as they are, borrowed
/// ones are copied.
pub trait IntoName {
    /// The name as the list holds it.
    fn into_name(self) -> Bytes;
}

impl IntoName for Bytes {
    fn into_name(self) -> Bytes {
        self
    }
}

impl IntoName for Vec<u8> {
    fn into_name(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoName for &[u8] {
    fn into_name(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> IntoName for &[u8; N] {
    fn into_name(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoName for &Vec<u8> {
    fn into_name(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoName for &str {
    fn into_name(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

/// One entry of the file list to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the destination, `/`-separated raw bytes (no leading
    /// `/`, no `.`/`..` components). The name `.` is the destination itself.
    /// Shared bytes ([`Bytes`]): a caller that lists many entries may cut their
    /// names out of one buffer instead of allocating each.
    pub name: Bytes,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time (sent from protocol 31).
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777` mask); the file-type bits come from `kind`.
    pub perms: u32,
}

impl FileEntry {
    /// A regular file.
    pub fn file(name: impl IntoName, size: u64, mtime: i64, perms: u32) -> Self {
        FileEntry {
            name: name.into_name(),
            kind: EntryKind::File { size },
            mtime,
            mtime_nsec: 0,
            perms,
        }
    }

    /// A directory.
    pub fn dir(name: impl IntoName, mtime: i64, perms: u32) -> Self {
        FileEntry {
            name: name.into_name(),
            kind: EntryKind::Dir,
            mtime,
            mtime_nsec: 0,
            perms,
        }
    }

    /// A symbolic link.
    pub fn symlink(name: impl IntoName, target: impl Into<Vec<u8>>, mtime: i64) -> Self {
        FileEntry {
            name: name.into_name(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
            mtime,
            mtime_nsec: 0,
            perms: 0o777,
        }
    }

    /// Sets the nanoseconds of the mtime.
    pub fn with_nsec(mut self, nsec: u32) -> Self {
        self.mtime_nsec = nsec;
        self
    }

    /// Full `st_mode` as sent on the wire.
    pub fn mode(&self) -> u32 {
        let t = match self.kind {
            EntryKind::File { .. } => S_IFREG,
            EntryKind::Dir => S_IFDIR,
            EntryKind::Symlink { .. } => S_IFLNK,
        };
        t | (self.perms & 0o7777)
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }

    /// Size announced in the list (0 for directories; target length for links).
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size } => *size,
            EntryKind::Dir => 0,
            EntryKind::Symlink { target } => target.len() as u64,
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks a name: relative, no empty, `.` or `..` components, no NUL, not too long.
pub fn validate_name(name: &[u8]) -> Result<()> {
    if name == b"." {
        return Ok(());
    }
    if name.is_empty() {
        return Err(Error::InvalidInput("empty file name".into()));
    }
    if name.len() > MAX_PATH {
        return Err(Error::InvalidInput(format!(
            "name longer than {MAX_PATH} bytes: {}",
            lossy(&name[..64])
        )));
    }
    // One pass finds the slashes and any NUL (a batch's names are long: sealed components are 52 bytes
    // or more, and a byte loop over them was 2-3 % of an unchanged night's CPU, two `memchr` passes 1 %).
    let mut bad_component = false;
    let mut start = 0;
    for end in memchr::memchr2_iter(b'/', 0, name).chain(std::iter::once(name.len())) {
        if name.get(end) == Some(&0) {
            return Err(Error::InvalidInput(format!(
                "name contains NUL: {}",
                lossy(name)
            )));
        }
        let comp = &name[start..end];
        bad_component |= comp.is_empty() || comp == b"." || comp == b"..";
        start = end + 1;
    }
    if name[0] == b'/' {
        return Err(Error::InvalidInput(format!(
            "absolute name: {}",
            lossy(name)
        )));
    }
    if bad_component {
        return Err(Error::InvalidInput(format!(
            "name has an empty, '.' or '..' component: {}",
            lossy(name)
        )));
    }
    Ok(())
}

/// Splits at the last `/`: (dirname, basename); dirname is empty at top level.
fn split(name: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memrchr(b'/', name) {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Item,
    Path,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Dir,
    Slash,
    Base,
    Trailing,
}

/// Walks one name the way `f_name_cmp` does.
struct Walk<'a> {
    base: &'a [u8],
    is_dir: bool,
    cur: &'a [u8],
    state: St,
    ty: Ty,
}

impl<'a> Walk<'a> {
    fn new(name: &'a [u8], is_dir: bool) -> Self {
        let (dir, base) = if name == b"." {
            (&b""[..], name)
        } else {
            split(name)
        };
        let mut w = Walk {
            base,
            is_dir,
            cur: &[],
            state: St::Dir,
            ty: Ty::Path,
        };
        if dir.is_empty() {
            w.enter_base();
        } else {
            w.cur = dir;
        }
        w
    }

    fn enter_base(&mut self) {
        self.ty = if self.is_dir { Ty::Path } else { Ty::Item };
        if self.ty == Ty::Path && self.base == b"." {
            self.ty = Ty::Item;
            self.state = St::Trailing;
            self.cur = &[];
        } else {
            self.cur = self.base;
            self.state = St::Base;
        }
    }

    /// Called when `cur` is exhausted: moves to the next part of the name
    /// (the `switch (state)` of rsync's `f_name_cmp`).
    fn step(&mut self) {
        match self.state {
            St::Dir => {
                self.state = St::Slash;
                self.cur = b"/";
            }
            St::Slash => self.enter_base(),
            St::Base => {
                self.state = St::Trailing;
                if self.ty == Ty::Path {
                    self.cur = b"/";
                } else {
                    self.ty = Ty::Item;
                }
            }
            St::Trailing => self.ty = Ty::Item,
        }
    }

    /// True when stepping would fall through to the trailing state.
    fn at_end(&self) -> bool {
        self.state == St::Trailing || (self.state == St::Base && self.ty == Ty::Item)
    }
}

/// rsync's `f_name_cmp` for protocol >= 29: within a directory, files sort
/// before subdirectories; directories compare as if their name ended in `/`.
///
/// Names of one batch share long folder prefixes (sealed names are about 52 bytes a component), and the
/// character walk over them was the largest single cost of an unchanged backup run. Both walks read the
/// same characters in the same state up to a `/` they have in common, so the comparison starts after the
/// last one (a unit test checks this against the full walk on random names).
pub fn f_name_cmp(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> Ordering {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    // A name's walk reads its bytes as they are unless its last `/` is its first byte (then that `/` is
    // not read): the cut must leave neither name nor remainder starting with `/` (names that validate
    // never do).
    let cut = a[..common]
        .iter()
        .rposition(|&c| c == b'/')
        .map(|slash| slash + 1)
        .filter(|&p| {
            a[0] != b'/'
                && a.get(p).is_some_and(|&c| c != b'/')
                && b.get(p).is_some_and(|&c| c != b'/')
        });
    match cut {
        Some(p) => f_name_walk_cmp(&a[p..], a_dir, &b[p..], b_dir),
        None => f_name_walk_cmp(a, a_dir, b, b_dir),
    }
}

/// A byte string whose plain order is [`f_name_cmp`]'s, for a name that passed [`validate_name`]: per
/// folder level `1 ‖ component ‖ /`, and a file's own name as `0 ‖ name` (files sort before folders at each
/// level; a folder compares as if its name ended in `/`; `.` is the empty key, first). Sorting a batch by
/// these keys compares each pair with one `memcmp` instead of a walk that splits both names every time.
pub fn f_name_sort_key(name: &[u8], is_dir: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 8);
    if name == b"." {
        return key;
    }
    let mut parts = name.split(|&c| c == b'/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() && !is_dir {
            key.push(0);
            key.extend_from_slice(part);
        } else {
            key.push(1);
            key.extend_from_slice(part);
            key.push(b'/');
        }
    }
    key
}

/// [`f_name_cmp`] by walking both names from their start (rsync's `f_name_cmp`).
fn f_name_walk_cmp(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> Ordering {
    let mut w1 = Walk::new(a, a_dir);
    let mut w2 = Walk::new(b, b_dir);
    let by_type = |t1: Ty| {
        if t1 == Ty::Path {
            Ordering::Greater
        } else {
            Ordering::Less
        }
    };
    if w1.ty != w2.ty {
        return by_type(w1.ty);
    }
    loop {
        if w1.cur.is_empty() {
            w1.step();
            if !w2.cur.is_empty() && w1.ty != w2.ty {
                return by_type(w1.ty);
            }
        }
        if w2.cur.is_empty() {
            if w2.at_end() {
                w2.state = St::Trailing;
                if w1.cur.is_empty() {
                    return Ordering::Equal;
                }
                w2.ty = Ty::Item;
            } else {
                w2.step();
            }
            if w1.ty != w2.ty {
                return by_type(w1.ty);
            }
        }
        let c1 = w1.cur.first().map_or(0i32, |&c| i32::from(c));
        let c2 = w2.cur.first().map_or(0i32, |&c| i32::from(c));
        if !w1.cur.is_empty() {
            w1.cur = &w1.cur[1..];
        }
        if !w2.cur.is_empty() {
            w2.cur = &w2.cur[1..];
        }
        if c1 != c2 {
            return c1.cmp(&c2);
        }
        if c1 == 0 {
            return Ordering::Equal;
        }
    }
}

/// The order of validated `entries` (one of them `.`) on the wire, as indexes: `f_name_cmp`'s order, made
/// as a walk of the tree the names form. Each folder's entries are sorted by their own name only (files
/// first, folders as if their name ended in `/`), and a folder's contents follow it: the order of
/// [`f_name_sort_key`]'s keys, without comparing whole paths (a batch's paths are long sealed names that
/// share their folders' part; sorting them whole was 7 % of an unchanged night's CPU). Checks that every
/// parent folder is listed and that no name is there twice.
fn wire_order(entries: &[FileEntry]) -> Result<Vec<usize>> {
    let n = entries.len();
    let root = entries
        .iter()
        .position(|e| e.name[..] == b"."[..])
        .ok_or_else(|| Error::InvalidInput("no '.' in the list".into()))?;
    let folders: std::collections::HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_dir())
        .map(|(i, e)| (&e.name[..], i))
        .collect();
    // Each entry's folder and where its own name starts. Consecutive entries are mostly in one folder:
    // the last one found is tried first.
    let mut parent = vec![root; n];
    let mut own = vec![0; n];
    let mut last: Option<(&[u8], usize)> = None;
    for (i, e) in entries.iter().enumerate() {
        if i == root {
            continue;
        }
        let (dir, _) = split(&e.name);
        if dir.is_empty() {
            continue;
        }
        own[i] = dir.len() + 1;
        parent[i] = match last {
            Some((d, p)) if d == dir => p,
            _ => {
                let Some(&p) = folders.get(dir) else {
                    return Err(Error::InvalidInput(format!(
                        "parent directory of {} is not in the list",
                        lossy(&e.name)
                    )));
                };
                last = Some((dir, p));
                p
            }
        };
    }
    // The entries of each folder, together (`children[start[f]..start[f + 1]]`), each group sorted.
    let mut start = vec![0; n + 1];
    for (i, &p) in parent.iter().enumerate() {
        if i != root {
            start[p + 1] += 1;
        }
    }
    for f in 0..n {
        start[f + 1] += start[f];
    }
    let mut fill = start.clone();
    let mut children = vec![0; n - 1];
    for (i, &p) in parent.iter().enumerate() {
        if i != root {
            children[fill[p]] = i;
            fill[p] += 1;
        }
    }
    let own_name = |i: usize| &entries[i].name[own[i]..];
    // Each group is sorted on a key of eight bytes that decides nearly every comparison (sealed names
    // are random from their first byte), falling back to the whole names on a tie. Comparing through the
    // entries' names (a pointer chase per comparison) made this sort about 5 % of the instructions of an
    // unchanged night.
    let mut keyed: Vec<SiblingKey> = Vec::new();
    for f in 0..n {
        let group = &mut children[start[f]..start[f + 1]];
        if group.len() < 2 {
            continue;
        }
        keyed.clear();
        keyed.extend(
            group
                .iter()
                .map(|&i| SiblingKey::new(own_name(i), entries[i].is_dir(), i)),
        );
        keyed.sort_unstable_by(|a, b| {
            a.cmp_key(b).then_with(|| {
                sibling_cmp(own_name(a.index), a.dir, own_name(b.index), b.dir)
                    .then(a.index.cmp(&b.index))
            })
        });
        for (slot, k) in group.iter_mut().zip(&keyed) {
            *slot = k.index;
        }
        for w in keyed.windows(2) {
            if w[0].cmp_key(&w[1]).is_eq() && own_name(w[0].index) == own_name(w[1].index) {
                return Err(Error::InvalidInput(format!(
                    "duplicate name: {}",
                    lossy(&entries[w[0].index].name)
                )));
            }
        }
    }
    // Each folder, then its entries, depth first.
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(children[start[i]..start[i + 1]].iter().rev());
    }
    Ok(order)
}

/// What [`sibling_cmp`] compares first: files before folders, then the first eight bytes of the name (a
/// folder's with its `/`), big-endian and padded with zeros. Names hold no NUL, so when the prefixes
/// differ they order the whole names; when they are equal, the names must be compared.
#[derive(Clone, Copy)]
struct SiblingKey {
    dir: bool,
    prefix: u64,
    index: usize,
}

impl SiblingKey {
    fn new(name: &[u8], dir: bool, index: usize) -> SiblingKey {
        let mut b = [0u8; 8];
        let n = name.len().min(8);
        b[..n].copy_from_slice(&name[..n]);
        if dir && name.len() < 8 {
            b[name.len()] = b'/';
        }
        SiblingKey {
            dir,
            prefix: u64::from_be_bytes(b),
            index,
        }
    }

    fn cmp_key(&self, other: &SiblingKey) -> Ordering {
        (self.dir, self.prefix).cmp(&(other.dir, other.prefix))
    }
}

/// The order of two entries of one folder by their own names: files first, a folder's name compared as
/// if it ended in `/` (the part of [`f_name_sort_key`]'s key that differs between them).
fn sibling_cmp(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> Ordering {
    match (a_dir, b_dir) {
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, false) => a.cmp(b),
        (true, true) => {
            let common = a.len().min(b.len());
            a[..common].cmp(&b[..common]).then_with(|| {
                let x = a.get(common).copied().unwrap_or(b'/');
                let y = b.get(common).copied().unwrap_or(b'/');
                x.cmp(&y)
            })
        }
    }
}

/// A validated, sorted file list.
#[derive(Debug, Clone)]
pub struct FileList {
    /// Entries in wire order (sorted; `.` first).
    pub entries: Vec<FileEntry>,
    /// For each wire index, the index in the caller's original list
    /// (`None` for an implied `.`).
    pub caller_index: Vec<Option<usize>>,
}

impl FileList {
    /// Validates and sorts the caller's entries. A missing `.` is added with
    /// `root_mtime` and mode 0755. Every parent directory must be listed.
    pub fn new(mut entries: Vec<FileEntry>, root_mtime: i64) -> Result<Self> {
        let mut has_root = false;
        for e in &entries {
            validate_name(&e.name)?;
            if e.name[..] == b"."[..] {
                if !e.is_dir() {
                    return Err(Error::InvalidInput("'.' must be a directory".into()));
                }
                if has_root {
                    return Err(Error::InvalidInput("duplicate name: .".into()));
                }
                has_root = true;
            }
            if let EntryKind::Symlink { target } = &e.kind
                && (target.is_empty() || target.len() > MAX_PATH || target.contains(&0))
            {
                return Err(Error::InvalidInput(format!(
                    "invalid symlink target for {}",
                    lossy(&e.name)
                )));
            }
            if e.mtime_nsec >= 1_000_000_000 {
                return Err(Error::InvalidInput(format!(
                    "mtime_nsec out of range for {}",
                    lossy(&e.name)
                )));
            }
        }
        let callers = entries.len();
        if !has_root {
            entries.push(FileEntry::dir(".", root_mtime, 0o755));
        }
        if entries.len() > i32::MAX as usize / 2 {
            return Err(Error::InvalidInput("too many entries".into()));
        }
        let order = wire_order(&entries)?;
        let caller_index = order.iter().map(|&i| (i < callers).then_some(i)).collect();
        permute(&mut entries, &order);
        Ok(FileList {
            entries,
            caller_index,
        })
    }

    /// The caller's entries in the caller's order (without the implied `.`), borrowed: the `i`th is the
    /// one the caller passed `i`th to [`FileList::new`].
    pub fn caller_order(&self) -> Vec<&FileEntry> {
        let mut order: Vec<Option<&FileEntry>> = vec![None; self.entries.len()];
        for (i, e) in self.caller_index.iter().zip(&self.entries) {
            if let Some(slot) = i.and_then(|i| order.get_mut(i)) {
                *slot = Some(e);
            }
        }
        order.into_iter().flatten().collect()
    }

    /// The list in the order of `protocol`: before 29, rsync sorts plain path
    /// bytes (directories are not moved after files, and `.` is not special:
    /// ` x` or `-x` sort before it); returns `None` when the current order
    /// already fits.
    pub fn for_protocol(&self, protocol: u32) -> Option<FileList> {
        if protocol >= 29 {
            return None;
        }
        let mut v: Vec<(Option<usize>, FileEntry)> = self
            .caller_index
            .iter()
            .copied()
            .zip(self.entries.iter().cloned())
            .collect();
        v.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let (caller_index, entries) = v.into_iter().unzip();
        Some(FileList {
            entries,
            caller_index,
        })
    }

    /// Encodes the whole list, including the end marker, for `protocol`.
    /// With `varint_flags` (CF_VARINT_FLIST_FLAGS) flags are varints.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        protocol: u32,
        varint_flags: bool,
        preserve_links: bool,
    ) {
        let mut enc = self.encoder(protocol, varint_flags, preserve_links);
        while enc.encode_until(out, usize::MAX) {}
    }

    /// Encodes the list a piece at a time ([`ListEncoder::encode_until`]): a sender writes each piece out
    /// before the next, instead of holding the whole encoded list (about 100 bytes an entry) in memory.
    pub fn encoder(
        &self,
        protocol: u32,
        varint_flags: bool,
        preserve_links: bool,
    ) -> ListEncoder<'_> {
        ListEncoder {
            entries: self.entries.iter(),
            enc: Encoder::default(),
            protocol,
            varint_flags,
            preserve_links,
            done: false,
        }
    }
}

/// Reorders `v` in place so that its `k`th element is the one that was at `order[k]` (`order` is a
/// permutation of `0..v.len()`): a batch's list is sorted without a second vector of its entries
/// (5,000 entries are about 900 KiB).
fn permute<T>(v: &mut [T], order: &[usize]) {
    debug_assert_eq!(v.len(), order.len());
    // `dest[i]`: where the element now at `i` belongs. Each swap puts one element in its place.
    let mut dest = vec![0usize; order.len()];
    for (k, &i) in order.iter().enumerate() {
        dest[i] = k;
    }
    for i in 0..v.len() {
        loop {
            let d = dest[i];
            if d == i {
                break;
            }
            v.swap(i, d);
            dest.swap(i, d);
        }
    }
}

/// A file list being encoded piece by piece; see [`FileList::encoder`].
pub struct ListEncoder<'a> {
    entries: std::slice::Iter<'a, FileEntry>,
    enc: Encoder,
    protocol: u32,
    varint_flags: bool,
    preserve_links: bool,
    done: bool,
}

impl ListEncoder<'_> {
    /// Appends entries to `out` until it holds at least `limit` bytes or the list ends, then (at the end)
    /// the list's end marker. Returns whether anything is left to encode.
    pub fn encode_until(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        if self.done {
            return false;
        }
        while out.len() < limit {
            let Some(e) = self.entries.next() else {
                if self.varint_flags {
                    codec::put_varint(out, 0);
                    codec::put_varint(out, 0); // io_error
                } else {
                    out.push(0);
                }
                if self.protocol < 30 {
                    codec::put_i32(out, 0); // io_error
                }
                self.done = true;
                return false;
            };
            self.enc.entry(
                out,
                e,
                self.protocol,
                self.varint_flags,
                self.preserve_links,
            );
        }
        true
    }
}

#[derive(Default)]
struct Encoder {
    last_name: Vec<u8>,
    mode: Option<u32>,
    mtime: Option<i64>,
}

impl Encoder {
    fn entry(
        &mut self,
        out: &mut Vec<u8>,
        e: &FileEntry,
        protocol: u32,
        varint_flags: bool,
        links: bool,
    ) {
        let mode = e.mode();
        let mut xflags: u32 = if e.is_dir() && e.name[..] == b"."[..] {
            XMIT_TOP_DIR
        } else {
            0
        };
        if self.mode == Some(mode) {
            xflags |= XMIT_SAME_MODE;
        } else {
            self.mode = Some(mode);
        }
        // No -o/-g: rsync still sets the "same" bits.
        xflags |= XMIT_SAME_UID | XMIT_SAME_GID;
        if self.mtime == Some(e.mtime) {
            xflags |= XMIT_SAME_TIME;
        } else {
            self.mtime = Some(e.mtime);
        }
        if e.mtime_nsec != 0 && protocol >= 31 {
            xflags |= XMIT_MOD_NSEC;
        }
        let name = &e.name;
        let l1 = common_prefix(name, &self.last_name).min(255);
        let l2 = name.len() - l1;
        if l1 > 0 {
            xflags |= XMIT_SAME_NAME;
        }
        if l2 > 255 {
            xflags |= XMIT_LONG_NAME;
        }
        if varint_flags {
            codec::put_varint(
                out,
                if xflags != 0 {
                    xflags as i32
                } else {
                    XMIT_EXTENDED_FLAGS as i32
                },
            );
        } else if protocol >= 28 {
            if xflags == 0 && !e.is_dir() {
                xflags |= XMIT_TOP_DIR;
            }
            if (xflags & 0xFF00) != 0 || xflags == 0 {
                xflags |= XMIT_EXTENDED_FLAGS;
                codec::put_u16(out, xflags as u16);
            } else {
                out.push(xflags as u8);
            }
        } else {
            if xflags & 0xFF == 0 {
                xflags |= if e.is_dir() {
                    XMIT_LONG_NAME
                } else {
                    XMIT_TOP_DIR
                };
            }
            out.push(xflags as u8);
        }
        if xflags & XMIT_SAME_NAME != 0 {
            out.push(l1 as u8);
        }
        if xflags & XMIT_LONG_NAME != 0 {
            codec::put_varint30(out, l2 as i32, protocol);
        } else {
            out.push(l2 as u8);
        }
        out.extend_from_slice(&name[l1..]);
        codec::put_varlong30(out, e.size() as i64, 3, protocol);
        if xflags & XMIT_SAME_TIME == 0 {
            if protocol >= 30 {
                codec::put_varlong(out, e.mtime, 4);
            } else {
                codec::put_i32(out, e.mtime as i32);
            }
        }
        if xflags & XMIT_MOD_NSEC != 0 {
            codec::put_varint(out, e.mtime_nsec as i32);
        }
        if xflags & XMIT_SAME_MODE == 0 {
            codec::put_i32(out, mode as i32);
        }
        if let EntryKind::Symlink { target } = &e.kind
            && links
        {
            codec::put_varint30(out, target.len() as i32, protocol);
            out.extend_from_slice(target);
        }
        self.last_name.clear();
        self.last_name.extend_from_slice(name);
    }
}

/// The length of the longest common prefix of `a` and `b`, 16 bytes at a time while they agree (a batch's
/// consecutive names share long sealed folder names: byte by byte, this was 2 % of an unchanged night).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Bounds applied to a file list received from a server.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    /// Most entries accepted.
    pub max_entries: usize,
    /// Most bytes of names plus symlink targets accepted in total.
    pub max_name_bytes: usize,
}

impl Default for ListLimits {
    fn default() -> Self {
        ListLimits {
            max_entries: 1 << 20,
            max_name_bytes: 128 << 20,
        }
    }
}

/// A file list received from a remote sender, in index order.
#[derive(Debug, Clone, Default)]
pub struct ReceivedList {
    /// Entries sorted as both sides index them.
    pub entries: Vec<FileEntry>,
    /// The io_error value the sender reported with the list.
    pub io_error: i32,
}

fn unsafe_name(name: &[u8], why: &str) -> Error {
    Error::protocol(format!(
        "server sent an unsafe file name {:?}: {why}",
        lossy(&name[..name.len().min(256)])
    ))
}

/// Checks a name received from a server: relative, no `..`/`.`/empty
/// components, no NUL, bounded length. `.` alone is the transfer root.
pub fn check_received_name(name: &[u8]) -> Result<()> {
    if name.contains(&0) {
        return Err(unsafe_name(name, "contains NUL"));
    }
    if name.first() == Some(&b'/') {
        return Err(unsafe_name(name, "absolute path"));
    }
    validate_name(name).map_err(|e| unsafe_name(name, &e.to_string()))
}

async fn read_varlong<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    min_bytes: usize,
) -> Result<i64> {
    let mut head = [0u8; 8];
    conn.read_exact(&mut head[..min_bytes]).await?;
    let n = codec::extra_bytes(head[0]);
    if min_bytes + n > 9 {
        return Err(Error::protocol(format!(
            "malformed varlong header {:#04x}",
            head[0]
        )));
    }
    let mut extra = [0u8; 8];
    conn.read_exact(&mut extra[..n]).await?;
    codec::finish_varlong(&head[..min_bytes], &extra[..n])
}

/// `read_varlong30`: longint before protocol 30, varlong from 30 on.
pub(crate) async fn read_varlong30<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    min_bytes: usize,
) -> Result<i64> {
    if conn.protocol >= 30 {
        return read_varlong(conn, min_bytes).await;
    }
    let v = conn.read_i32().await?;
    if v != -1 {
        return Ok(i64::from(v));
    }
    let mut b = [0u8; 8];
    conn.read_exact(&mut b).await?;
    Ok(i64::from_le_bytes(b))
}

async fn read_varint30<W: AsyncWrite + Unpin>(conn: &mut Conn<'_, W>) -> Result<i32> {
    if conn.protocol >= 30 {
        conn.read_varint().await
    } else {
        conn.read_i32().await
    }
}

/// Reads the file list a remote sender sends (`recv_file_list`,
/// `recv_file_entry`) for our options (`-r`/`-d`, `-l`, `-p`, `-t`, no
/// owners, devices, hard links or checksums), validates every name and
/// sorts the list into index order. Every allocation is bounded by `limits`.
pub(crate) async fn recv_list<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    varint_flags: bool,
    preserve_links: bool,
    limits: &ListLimits,
) -> Result<ReceivedList> {
    let proto = conn.protocol;
    let mut entries: Vec<FileEntry> = Vec::new();
    let mut io_error = 0i32;
    let mut last_name: Vec<u8> = Vec::new();
    let mut mode: u32 = 0;
    let mut mtime: i64 = 0;
    let mut name_bytes = 0usize;
    loop {
        let flags: u32 = if varint_flags {
            let f = conn.read_varint().await?;
            if f == 0 {
                io_error |= conn.read_varint().await?;
                break;
            }
            f as u32
        } else {
            let f = u32::from(conn.read_u8().await?);
            if f == 0 {
                break;
            }
            let mut f = f;
            if proto >= 28 && f & XMIT_EXTENDED_FLAGS != 0 {
                f |= u32::from(conn.read_u8().await?) << 8;
                if proto >= 30 && f == XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST {
                    io_error |= conn.read_varint().await?;
                    break;
                }
            }
            f
        };
        if entries.len() >= limits.max_entries {
            return Err(Error::range(
                "file-list entry count",
                entries.len() as i64 + 1,
                format!("<= {}", limits.max_entries),
            ));
        }
        if proto >= 28 && flags & XMIT_HLINKED != 0 {
            return Err(Error::protocol(
                "file list has hard-link data we did not ask for",
            ));
        }
        if proto >= 30 && flags & (XMIT_USER_NAME_FOLLOWS | XMIT_GROUP_NAME_FOLLOWS) != 0 {
            return Err(Error::protocol(
                "file list has owner names we did not ask for",
            ));
        }
        let l1 = if flags & XMIT_SAME_NAME != 0 {
            usize::from(conn.read_u8().await?)
        } else {
            0
        };
        if l1 > last_name.len() {
            return Err(Error::range(
                "shared name prefix",
                l1 as i64,
                format!("<= {}", last_name.len()),
            ));
        }
        let l2 = if flags & XMIT_LONG_NAME != 0 {
            read_varint30(conn).await?
        } else {
            i32::from(conn.read_u8().await?)
        };
        if l2 < 0 || l1 + l2 as usize > MAX_PATH {
            return Err(Error::range(
                "file name length",
                l1 as i64 + i64::from(l2),
                format!("0..={MAX_PATH}"),
            ));
        }
        let mut name = Vec::with_capacity(l1 + l2 as usize);
        name.extend_from_slice(&last_name[..l1]);
        name.resize(l1 + l2 as usize, 0);
        conn.read_exact(&mut name[l1..]).await?;
        check_received_name(&name)?;
        let size = read_varlong30(conn, 3).await?;
        if size < 0 {
            return Err(Error::range("file size", size, ">= 0"));
        }
        if flags & XMIT_SAME_TIME == 0 {
            mtime = if proto >= 30 {
                read_varlong(conn, 4).await?
            } else {
                i64::from(conn.read_i32().await?)
            };
        }
        let nsec = if proto >= 31 && flags & XMIT_MOD_NSEC != 0 {
            let n = conn.read_varint().await?;
            if !(0..1_000_000_000).contains(&n) {
                return Err(Error::range("mtime nanoseconds", n.into(), "0..1000000000"));
            }
            n as u32
        } else {
            0
        };
        if flags & XMIT_SAME_MODE == 0 {
            mode = conn.read_i32().await? as u32;
        }
        let kind = match mode & S_IFMT {
            S_IFREG => EntryKind::File { size: size as u64 },
            S_IFDIR => EntryKind::Dir,
            S_IFLNK if preserve_links => {
                let len = read_varint30(conn).await?;
                if len <= 0 || len as usize > MAX_PATH {
                    return Err(Error::range(
                        "symlink target length",
                        len.into(),
                        format!("1..={MAX_PATH}"),
                    ));
                }
                let mut t = vec![0u8; len as usize];
                conn.read_exact(&mut t).await?;
                if t.contains(&0) {
                    return Err(unsafe_name(&name, "symlink target contains NUL"));
                }
                name_bytes += t.len();
                EntryKind::Symlink { target: t }
            }
            other => {
                return Err(Error::protocol(format!(
                    "file list entry {:?} has unsupported type {other:#o}",
                    lossy(&name)
                )));
            }
        };
        name_bytes += name.len();
        if name_bytes > limits.max_name_bytes {
            return Err(Error::range(
                "total file-list name bytes",
                name_bytes as i64,
                format!("<= {}", limits.max_name_bytes),
            ));
        }
        if name == b"." && !matches!(kind, EntryKind::Dir) {
            return Err(unsafe_name(&name, "'.' is not a directory"));
        }
        last_name.clear();
        last_name.extend_from_slice(&name);
        entries.push(FileEntry {
            name: Bytes::from(name),
            kind,
            mtime,
            mtime_nsec: nsec,
            perms: mode & 0o7777,
        });
    }
    if proto < 30 {
        io_error |= conn.read_i32().await?;
    }
    sort_received(&mut entries, proto)?;
    Ok(ReceivedList { entries, io_error })
}

/// Sorts a received list into index order (`flist_sort_and_clean`) and checks
/// that names are unique and every parent is a listed directory.
pub fn sort_received(entries: &mut [FileEntry], protocol: u32) -> Result<()> {
    if protocol >= 29 {
        entries.sort_by(|a, b| f_name_cmp(&a.name, a.is_dir(), &b.name, b.is_dir()));
    } else {
        // Before 29 `f_name_cmp` compares the joined path bytes; "." is not
        // special (names starting with a byte below '.' sort before it).
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut dirs: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    let mut names: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for e in entries.iter() {
        if !names.insert(&e.name) {
            return Err(unsafe_name(&e.name, "listed twice"));
        }
        if e.is_dir() {
            dirs.insert(&e.name);
        }
    }
    for e in entries.iter() {
        let (d, _) = split(&e.name);
        if !d.is_empty() && !dirs.contains(d) {
            return Err(unsafe_name(&e.name, "its parent is not a listed directory"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift64 stream: reproducible random names without a dependency.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// A name to compare with `a`: half the time `a`'s first bytes and then a fresh name (names in a real
    /// list share long prefixes), else a fresh name.
    fn partner(
        a: &[u8],
        next: &mut dyn FnMut() -> u64,
        name: &dyn Fn(&mut dyn FnMut() -> u64) -> Vec<u8>,
    ) -> Vec<u8> {
        if next().is_multiple_of(2) {
            let cut = (next() as usize) % (a.len() + 1);
            [&a[..cut], &name(next)].concat()
        } else {
            name(next)
        }
    }

    fn sorted(mut v: Vec<(&'static str, bool)>) -> Vec<&'static str> {
        v.sort_by(|a, b| f_name_cmp(a.0.as_bytes(), a.1, b.0.as_bytes(), b.1));
        v.into_iter().map(|x| x.0).collect()
    }

    #[test]
    fn shared_folders_are_skipped_without_changing_the_order() {
        // Random names over an alphabet that stresses the walk: separators, bytes that sort before and
        // after '/', dots, and names that are prefixes of others.
        let alphabet = b"ab./ -\xff";
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let name = |next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            let len = 1 + (next() % 9) as usize;
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let a = name(&mut next);
            let b = partner(&a, &mut next, &name);
            let (ad, bd) = (next().is_multiple_of(2), next().is_multiple_of(2));
            assert_eq!(
                f_name_cmp(&a, ad, &b, bd),
                f_name_walk_cmp(&a, ad, &b, bd),
                "{:?} ({ad}) vs {:?} ({bd})",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            );
            checked += usize::from(a[..a.len().min(b.len())].contains(&b'/'));
        }
        assert!(checked > 10_000, "too few names with folders: {checked}");
    }

    #[test]
    fn sort_keys_order_as_f_name_cmp() {
        let alphabet = b"ab.!-~\x01\xff";
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let name = |next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            let parts = 1 + (next() % 4) as usize;
            let mut n = Vec::new();
            for p in 0..parts {
                if p > 0 {
                    n.push(b'/');
                }
                for _ in 0..1 + next() % 4 {
                    n.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
            n
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let a = if next().is_multiple_of(50) {
                b".".to_vec()
            } else {
                name(&mut next)
            };
            let b = partner(&a, &mut next, &name);
            let a_dir = a == b"." || next().is_multiple_of(2);
            let b_dir = next().is_multiple_of(2);
            if validate_name(&a).is_err() || validate_name(&b).is_err() || (b == b"." && !b_dir) {
                continue;
            }
            checked += 1;
            assert_eq!(
                f_name_sort_key(&a, a_dir).cmp(&f_name_sort_key(&b, b_dir)),
                f_name_walk_cmp(&a, a_dir, &b, b_dir),
                "{:?} ({a_dir}) vs {:?} ({b_dir})",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            );
        }
        assert!(checked > 50_000, "too few valid names: {checked}");
    }

    #[test]
    fn the_wire_order_is_the_sort_keys_order() {
        let alphabet = b"ab.!-/~\x01\xff";
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..1000 {
            // A random tree: names of 1-3 characters (after a long common start, for some), folders up to
            // four deep.
            let mut entries = vec![FileEntry::dir(".", 0, 0o755)];
            let mut folders: Vec<Vec<u8>> = vec![Vec::new()];
            let mut seen = std::collections::HashSet::new();
            for _ in 0..(next() % 60) {
                let parent = folders[(next() % folders.len() as u64) as usize].clone();
                let mut name = parent.clone();
                if !name.is_empty() {
                    name.push(b'/');
                }
                // Some names share their first eight bytes or more (the sort's key), or end there.
                match next() % 4 {
                    0 => name.extend_from_slice(b"abcdefg"),
                    1 => name.extend_from_slice(b"abcdefgh"),
                    _ => {}
                }
                for _ in 0..1 + next() % 3 {
                    let c = alphabet[(next() % alphabet.len() as u64) as usize];
                    name.push(if c == b'/' { b'x' } else { c });
                }
                if name == b"." || validate_name(&name).is_err() || !seen.insert(name.clone()) {
                    continue;
                }
                if next().is_multiple_of(3) && name.iter().filter(|&&c| c == b'/').count() < 3 {
                    folders.push(name.clone());
                    entries.push(FileEntry::dir(name, 0, 0o755));
                } else {
                    entries.push(FileEntry::file(name, 1, 0, 0o644));
                }
            }
            // In a shuffled order, folders before or after their contents.
            for i in (1..entries.len()).rev() {
                entries.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let mut want = entries.clone();
            want.sort_by_key(|e| f_name_sort_key(&e.name, e.is_dir()));
            let got = FileList::new(entries.clone(), 0).unwrap();
            assert_eq!(got.entries, want, "round {round}");
            let back: Vec<&FileEntry> = got.caller_order();
            assert_eq!(back, entries.iter().collect::<Vec<_>>(), "round {round}");
        }
    }

    #[test]
    fn common_prefixes() {
        let long = [b'x'; 40];
        for (a, b, n) in [
            (&b""[..], &b""[..], 0),
            (b"abc", b"abd", 2),
            (b"abc", b"ab", 2),
            (&long[..], &long[..39], 39),
            (&long[..], &long[..], 40),
        ] {
            assert_eq!(common_prefix(a, b), n);
            assert_eq!(common_prefix(b, a), n);
        }
        let mut other = long;
        for i in 0..40 {
            other[i] = b'y';
            assert_eq!(common_prefix(&long, &other), i);
            other[i] = b'x';
        }
    }

    #[test]
    fn every_parent_must_be_listed_as_a_folder_and_names_once() {
        let f = |n: &str| FileEntry::file(n, 1, 0, 0o644);
        let d = |n: &str| FileEntry::dir(n, 0, 0o755);
        let ok = |v: Vec<FileEntry>| FileList::new(v, 0).map(|l| l.entries.len());
        assert_eq!(
            ok(vec![d("a"), d("a/b"), f("a/b/c"), f("a/x"), f("y")]).unwrap(),
            6
        );
        assert_eq!(
            ok(vec![f("a/b/c"), d("a/b"), d("a"), d("ab"), f("ab/z")]).unwrap(),
            6
        );
        let missing = [
            vec![d("a"), f("a/b/c")],
            vec![f("a"), f("a/b")],
            vec![d("ab"), f("a/x")],
            vec![d("a-"), d("a"), f("a-/b/c")],
            vec![d("b"), d("a/b"), f("a/b/c")],
        ];
        for v in missing {
            let e = FileList::new(v.clone(), 0).unwrap_err().to_string();
            assert!(e.contains("is not in the list"), "{v:?}: {e}");
        }
        for v in [vec![f("a"), f("a")], vec![d("a"), d("a"), f("a/x")]] {
            let e = FileList::new(v.clone(), 0).unwrap_err().to_string();
            assert!(e.contains("duplicate name"), "{v:?}: {e}");
        }
    }

    #[test]
    fn the_callers_order_comes_back() {
        let names = ["b", "a", "a/x", "z"];
        let entries: Vec<FileEntry> = names
            .iter()
            .map(|n| {
                if n.len() == 1 && *n != "z" {
                    FileEntry::dir(*n, 0, 0o755)
                } else {
                    FileEntry::file(*n, 1, 0, 0o644)
                }
            })
            .collect();
        let list = FileList::new(entries, 0).unwrap();
        assert_ne!(
            list.entries
                .iter()
                .map(|e| e.name.to_vec())
                .collect::<Vec<_>>(),
            names
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect::<Vec<_>>()
        );
        let back: Vec<Vec<u8>> = list
            .caller_order()
            .into_iter()
            .map(|e| e.name.to_vec())
            .collect();
        assert_eq!(
            back,
            names
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn sort_order() {
        let v = vec![
            ("b", true),
            ("a.b", true),
            ("a", true),
            ("z", false),
            (".", true),
            ("a/x", false),
            ("a/sub", true),
            ("a/sub/f", false),
            ("a/y", false),
            ("a.b/q", false),
            ("b/c", false),
            ("a-file", false),
        ];
        assert_eq!(
            sorted(v),
            [
                ".", "a-file", "z", "a.b", "a.b/q", "a", "a/x", "a/y", "a/sub", "a/sub/f", "b",
                "b/c"
            ]
        );
    }

    #[test]
    fn sort_equal_and_prefix() {
        assert_eq!(f_name_cmp(b"a", false, b"a", false), Ordering::Equal);
        assert_eq!(f_name_cmp(b"a/b", true, b"a/b", true), Ordering::Equal);
        assert_eq!(f_name_cmp(b"ab", false, b"a", false), Ordering::Greater);
        assert_eq!(f_name_cmp(b"a", false, b"ab", false), Ordering::Less);
        assert_eq!(f_name_cmp(b"d", true, b"d/e", false), Ordering::Less);
        assert_eq!(f_name_cmp(b"d/e", false, b"d", true), Ordering::Greater);
        // Bytes compare unsigned.
        assert_eq!(f_name_cmp(b"\xff", false, b"a", false), Ordering::Greater);
    }

    #[test]
    fn validation() {
        assert!(validate_name(b"a/../b").is_err());
        assert!(validate_name(b"/etc").is_err());
        assert!(validate_name(b"a//b").is_err());
        assert!(validate_name(b"a/").is_err());
        assert!(validate_name(b"a b/\n\xff").is_ok());
        assert!(FileList::new(vec![FileEntry::file("d/x", 1, 0, 0o644)], 0).is_err());
        assert!(
            FileList::new(
                vec![
                    FileEntry::file("x", 1, 0, 0o644),
                    FileEntry::file("x", 1, 0, 0o644)
                ],
                0
            )
            .is_err()
        );
    }

    #[test]
    fn permute_puts_each_element_where_the_order_says() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        for n in [0usize, 1, 2, 3, 7, 64, 1000] {
            for _ in 0..50 {
                // A random permutation (Fisher-Yates), then the expected result the naive way.
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, (next() as usize) % (i + 1));
                }
                let v: Vec<u64> = (0..n).map(|_| next()).collect();
                let want: Vec<u64> = order.iter().map(|&i| v[i]).collect();
                let mut got = v.clone();
                permute(&mut got, &order);
                assert_eq!(got, want, "n = {n}");
            }
        }
    }

    #[test]
    fn encoding_in_pieces_gives_the_same_bytes() {
        let mut next = xorshift(0x0dd_ba11_cafe_f00d);
        let mut entries = vec![FileEntry::dir("d", 5, 0o755)];
        for i in 0..500 {
            let name = format!("{}{i}", if next().is_multiple_of(3) { "d/" } else { "" });
            let mtime = (next() % 4) as i64;
            entries.push(FileEntry::file(
                name.as_str(),
                next() % 100_000,
                mtime,
                0o644,
            ));
        }
        let list = FileList::new(entries, 9).unwrap();
        for (protocol, varint) in [(31, true), (30, false), (29, false), (27, false)] {
            let mut whole = Vec::new();
            list.encode(&mut whole, protocol, varint, true);
            for limit in [1, 7, 100, 4096, usize::MAX] {
                let mut pieces = Vec::new();
                let mut out = Vec::new();
                let mut enc = list.encoder(protocol, varint, true);
                let mut calls = 0;
                loop {
                    let more = enc.encode_until(&mut out, limit);
                    calls += 1;
                    assert!(
                        out.len() < limit.saturating_add(300) || !more,
                        "a piece past its limit"
                    );
                    pieces.extend_from_slice(&out);
                    out.clear();
                    if !more {
                        break;
                    }
                }
                assert!(!enc.encode_until(&mut out, limit) && out.is_empty());
                assert_eq!(pieces, whole, "protocol {protocol}, limit {limit}");
                if limit == 100 {
                    assert!(calls > 10, "{calls} pieces");
                }
            }
        }
    }

    #[test]
    fn encode_entry() {
        let l = FileList::new(
            vec![FileEntry::file("ab", 100000, 1_700_000_000, 0o644)],
            1_700_000_000,
        )
        .unwrap();
        let mut out = Vec::new();
        l.encode(&mut out, 31, true, true);
        // "." entry: flags TOP_DIR|SAME_UID|SAME_GID = 0x19
        assert_eq!(out[0], 0x19);
        assert_eq!(out[1], 1);
        assert_eq!(out[2], b'.');
        // second entry: SAME_UID|SAME_GID|SAME_TIME = 0x98 -> varint 0x80 0x98
        let tail = &out[out.len() - 2..];
        assert_eq!(tail, [0, 0]);
    }
}
