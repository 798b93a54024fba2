//! Cutting a restore into rsync sessions of bounded size, so that memory does not grow with the number of
//! files restored (rsync's file list and the table of expected entries are per session).
//!
//! The manifest lists entries depth-first, a folder right before its contents, so a folder's whole
//! subtree is a contiguous run. A folder whose subtree has at most `limit` entries travels whole in one
//! session (`+ /F/***`); a bigger one is split: its own direct children go in one unit (`+ /F/`, `+ /F/*`,
//! held while its subfolders' subtrees are planned), and each subfolder is planned the same way. Units are
//! packed into batches of about `limit` entries. Memory: the batch being filled, plus the direct children
//! of each split folder on the current path (as the share walker holds one folder listing per level).
//!
//! Every name rsync lists in a batch is either an expected entry of that batch, a folder above its items,
//! or a subfolder of a split folder (planned in another batch); anything else is extra.

use std::collections::{HashMap, HashSet, VecDeque};

use rsync_wire::FilterRule;

use crate::manifest::{EntryKind, MANIFEST_NAME, ManifestEntry};

/// What one rule set selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A folder and everything below it.
    Subtree(Vec<u8>),
    /// A folder and its direct children (the children's own contents are elsewhere).
    Children(Vec<u8>),
    /// One file or symlink.
    Single(Vec<u8>),
}

/// One rsync session of a restore. Remote paths are relative to the snapshot folder; `""` is its root.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    /// Expected entries: remote path → manifest entry.
    pub jobs: Vec<(Vec<u8>, ManifestEntry)>,
    /// Listed names that are neither jobs nor extra (subfolders planned in other batches).
    pub elsewhere: Vec<Vec<u8>>,
    /// Everything: one session without filter rules (the whole snapshot fits in one batch).
    pub everything: bool,
}

impl Batch {
    fn size(&self) -> usize {
        self.jobs.len() + self.elsewhere.len()
    }

    /// Folders above the items (listed by rsync as the way down, not restored in this batch).
    pub fn ancestors(&self) -> HashSet<Vec<u8>> {
        let mut out = HashSet::new();
        for item in &self.items {
            let (Item::Subtree(p) | Item::Children(p) | Item::Single(p)) = item;
            for (i, c) in p.iter().enumerate() {
                if *c == b'/' {
                    out.insert(p[..i].to_vec());
                }
            }
        }
        out
    }

    /// The filter rules of this batch; `sealed_names` says which internal files to leave out.
    pub fn rules(&self, sealed_names: bool) -> Vec<FilterRule> {
        let mut r = vec![FilterRule::Exclude(
            format!("/{MANIFEST_NAME}").into_bytes(),
        )];
        if sealed_names {
            r.push(FilterRule::Exclude(
                format!("{}*", seal::names::LONG_NAME_SIDE_PREFIX).into_bytes(),
            ));
        } else {
            r.push(FilterRule::Exclude(b"/.offsite-*".to_vec()));
        }
        if self.everything {
            return r;
        }
        let mut seen = HashSet::new();
        let mut add = |r: &mut Vec<FilterRule>, p: Vec<u8>| {
            if seen.insert(p.clone()) {
                r.push(FilterRule::Include(p));
            }
        };
        for item in &self.items {
            let (Item::Subtree(p) | Item::Children(p) | Item::Single(p)) = item;
            for (i, c) in p.iter().enumerate() {
                if *c == b'/' {
                    add(&mut r, pattern(&p[..i], b"/"));
                }
            }
            match item {
                Item::Subtree(p) if p.is_empty() => add(&mut r, b"/***".to_vec()),
                Item::Subtree(p) => add(&mut r, pattern(p, b"/***")),
                Item::Children(p) if p.is_empty() => add(&mut r, b"/*".to_vec()),
                Item::Children(p) => {
                    add(&mut r, pattern(p, b"/"));
                    add(&mut r, pattern(p, b"/*"));
                }
                Item::Single(p) => add(&mut r, pattern(p, b"")),
            }
        }
        r.push(FilterRule::Exclude(b"*".to_vec()));
        r
    }
}

/// An rsync pattern matching exactly `/literal` followed by `suffix`: rsync treats a pattern with `*`, `?`
/// or `[` as a wildcard pattern where `\` escapes, and any other pattern literally. A newline cannot be
/// sent in a rule; `?` stands for it (the manifest decides what is restored).
pub fn pattern(literal: &[u8], suffix: &[u8]) -> Vec<u8> {
    let wild =
        suffix.iter().any(|c| b"*?[".contains(c)) || literal.iter().any(|c| b"*?[\n".contains(c));
    let mut p = vec![b'/'];
    for &c in literal {
        match c {
            b'\n' => p.push(b'?'),
            b'*' | b'?' | b'[' | b'\\' if wild => p.extend_from_slice(&[b'\\', c]),
            c => p.push(c),
        }
    }
    p.extend_from_slice(suffix);
    p
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => &path[..0],
    }
}

/// A split folder being planned: its own entry and its direct children so far.
struct Split {
    plain: Vec<u8>,
    remote: Vec<u8>,
    jobs: Vec<(Vec<u8>, ManifestEntry)>,
    elsewhere: Vec<Vec<u8>>,
}

/// Counts subtree sizes (first pass), then turns the selected entries (second pass, in manifest order)
/// into batches.
pub struct Planner {
    limit: usize,
    /// Entries in each selected folder's subtree, the folder included (`""`: all selected entries).
    counts: HashMap<Vec<u8>, usize>,
    covered: Option<Vec<u8>>,
    splits: Vec<Split>,
    batch: Batch,
    ready: VecDeque<Batch>,
    started: bool,
    done: bool,
}

impl Planner {
    pub fn new(limit: usize) -> Planner {
        Planner {
            limit: limit.max(1),
            counts: HashMap::new(),
            covered: None,
            splits: Vec::new(),
            batch: Batch::default(),
            ready: VecDeque::new(),
            started: false,
            done: false,
        }
    }

    /// First pass: one selected entry.
    pub fn count(&mut self, e: &ManifestEntry) {
        *self.counts.entry(Vec::new()).or_default() += 1;
        let p = &e.path;
        for (i, c) in p.iter().enumerate() {
            if *c == b'/' {
                *self.counts.entry(p[..i].to_vec()).or_default() += 1;
            }
        }
        if e.kind == EntryKind::Dir {
            *self.counts.entry(p.clone()).or_default() += 1;
        }
    }

    fn start(&mut self, whole_share: bool) {
        if self.started {
            return;
        }
        self.started = true;
        let total = self.counts.get(&Vec::new()).copied().unwrap_or(0);
        if whole_share && total <= self.limit {
            self.batch.everything = true;
            self.covered = Some(Vec::new());
        } else if whole_share {
            self.splits.push(Split {
                plain: Vec::new(),
                remote: Vec::new(),
                jobs: Vec::new(),
                elsewhere: Vec::new(),
            });
        }
    }

    fn flush(&mut self) {
        if self.batch.size() > 0 || self.batch.everything {
            self.ready.push_back(std::mem::take(&mut self.batch));
        }
    }

    fn close_split(&mut self) {
        if let Some(s) = self.splits.pop() {
            if self.batch.size() > 0
                && self.batch.size() + s.jobs.len() + s.elsewhere.len() > self.limit
            {
                self.flush();
            }
            self.batch.items.push(Item::Children(s.remote));
            self.batch.jobs.extend(s.jobs);
            self.batch.elsewhere.extend(s.elsewhere);
            if self.batch.size() >= self.limit {
                self.flush();
            }
        }
    }

    /// Second pass: one selected entry (in manifest order) and its path on the target. `whole_share`:
    /// nothing was asked for in particular.
    pub fn plan(&mut self, e: ManifestEntry, remote: Vec<u8>, whole_share: bool) {
        self.start(whole_share);
        if let Some(c) = &self.covered {
            if is_under(&e.path, c) {
                self.batch.jobs.push((remote, e));
                return;
            }
            self.covered = None;
            if self.batch.size() >= self.limit {
                self.flush();
            }
        }
        while self
            .splits
            .last()
            .is_some_and(|s| !is_under(&e.path, &s.plain))
        {
            self.close_split();
        }
        let child_of_split = self
            .splits
            .last()
            .is_some_and(|s| parent(&e.path) == s.plain.as_slice());
        if e.kind == EntryKind::Dir {
            let count = self.counts.get(&e.path).copied().unwrap_or(1);
            if child_of_split && let Some(s) = self.splits.last_mut() {
                s.elsewhere.push(remote.clone());
            }
            if count <= self.limit {
                if self.batch.size() > 0 && self.batch.size() + count > self.limit {
                    self.flush();
                }
                self.batch.items.push(Item::Subtree(remote.clone()));
                self.covered = Some(e.path.clone());
                self.batch.jobs.push((remote, e));
            } else {
                self.splits.push(Split {
                    plain: e.path.clone(),
                    remote: remote.clone(),
                    jobs: vec![(remote, e)],
                    elsewhere: Vec::new(),
                });
            }
            return;
        }
        match self.splits.last_mut() {
            Some(s) if child_of_split => s.jobs.push((remote, e)),
            _ => {
                self.batch.items.push(Item::Single(remote.clone()));
                self.batch.jobs.push((remote, e));
                if self.batch.size() >= self.limit {
                    self.flush();
                }
            }
        }
    }

    /// Ends the second pass.
    pub fn finish(&mut self, whole_share: bool) {
        self.start(whole_share);
        while !self.splits.is_empty() {
            self.close_split();
        }
        self.flush();
        self.done = true;
    }

    /// `finish` was called and every batch was taken.
    pub fn finished(&self) -> bool {
        self.done && self.ready.is_empty()
    }

    /// The next complete batch.
    pub fn next_batch(&mut self) -> Option<Batch> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> ManifestEntry {
        ManifestEntry {
            path: path.as_bytes().to_vec(),
            kind,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            perms: 0o644,
            remote_size: 0,
            hash: [0; 32],
            link: Vec::new(),
        }
    }

    /// A tree in manifest order: `d/` folders, others files.
    fn tree() -> Vec<ManifestEntry> {
        let mut v = Vec::new();
        for p in [
            "a.txt",
            "big/",
            "big/1",
            "big/2",
            "big/3",
            "big/sub/",
            "big/sub/x",
            "big/sub/y",
            "big/z",
            "small/",
            "small/q",
            "top",
        ] {
            let (p, k) = match p.strip_suffix('/') {
                Some(d) => (d, EntryKind::Dir),
                None => (p, EntryKind::File),
            };
            v.push(entry(p, k));
        }
        v
    }

    fn plan(limit: usize, entries: &[ManifestEntry]) -> Vec<Batch> {
        let mut p = Planner::new(limit);
        for e in entries {
            p.count(e);
        }
        for e in entries {
            p.plan(e.clone(), e.path.clone(), true);
        }
        p.finish(true);
        std::iter::from_fn(|| p.next_batch()).collect()
    }

    fn texts(b: &Batch) -> Vec<String> {
        b.rules(false)
            .iter()
            .map(|r| String::from_utf8(r.text()).unwrap())
            .collect()
    }

    #[test]
    fn small_shares_are_one_session_without_rules() {
        let b = plan(100, &tree());
        assert_eq!(b.len(), 1);
        assert!(b[0].everything);
        assert_eq!(b[0].jobs.len(), 12);
        assert_eq!(texts(&b[0]), ["- /.offsite-manifest", "- /.offsite-*"]);
    }

    #[test]
    fn big_folders_are_split_and_every_entry_is_planned_once() {
        let all = tree();
        for limit in 1..14 {
            let batches = plan(limit, &all);
            let mut planned: Vec<Vec<u8>> = batches
                .iter()
                .flat_map(|b| b.jobs.iter().map(|j| j.0.clone()))
                .collect();
            planned.sort();
            let mut want: Vec<Vec<u8>> = all.iter().map(|e| e.path.clone()).collect();
            want.sort();
            assert_eq!(planned, want, "limit {limit}");
            for b in &batches {
                // A batch only exceeds the limit by one unit (a folder's direct children).
                assert!(b.size() <= limit.max(6), "limit {limit}: {b:?}");
            }
        }
        let b = plan(4, &all);
        let all_rules: Vec<Vec<String>> = b.iter().map(texts).collect();
        assert!(
            all_rules
                .iter()
                .any(|r| r.contains(&"+ /big/sub/***".to_string())),
            "{all_rules:?}"
        );
        assert!(
            all_rules
                .iter()
                .any(|r| r.contains(&"+ /big/*".to_string())),
            "{all_rules:?}"
        );
        // big/sub is listed with big's children but planned in its own batch.
        let with_children = b
            .iter()
            .find(|b| b.items.contains(&Item::Children(b"big".to_vec())))
            .unwrap();
        assert_eq!(with_children.elsewhere, [b"big/sub".to_vec()]);
    }

    #[test]
    fn patterns_escape_wildcards_only_when_rsync_would_read_them() {
        assert_eq!(pattern(b"plain", b""), b"/plain");
        assert_eq!(pattern(b"back\\slash", b""), b"/back\\slash");
        assert_eq!(pattern(b"back\\slash", b"/***"), b"/back\\\\slash/***");
        assert_eq!(pattern(b"a*b[1]?", b"/"), b"/a\\*b\\[1]\\?/");
        assert_eq!(pattern(b"new\nline", b""), b"/new?line");
    }
}
