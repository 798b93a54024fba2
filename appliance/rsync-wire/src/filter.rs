//! Filter rules sent to a remote sender (rsync `exclude.c`:
//! `send_filter_list`): each rule is an int32 length plus `+ PATTERN` or
//! `- PATTERN`, the list ends with an int32 0. In a pull the list is always
//! sent; the server applies it while building its file list.

use crate::codec;
use crate::error::{Error, Result};

/// Longest pattern accepted.
pub const MAX_PATTERN: usize = 4096;

/// One include or exclude rule (rsync pattern syntax: a leading `/`
/// anchors at the transfer root, a trailing `/` matches directories only,
/// `*`, `**` and `***` as in rsync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterRule {
    /// `+ PATTERN`
    Include(Vec<u8>),
    /// `- PATTERN`
    Exclude(Vec<u8>),
}

impl FilterRule {
    /// The rules that select exactly one item of the transferred tree:
    /// `path` is relative to the transfer root (`a/b/file`); with
    /// `is_dir` the directory and everything below it is selected.
    /// Its parent directories are included (without their other contents).
    pub fn only(path: &[u8], is_dir: bool) -> Result<Vec<FilterRule>> {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        crate::flist::validate_name(path)?;
        if path == b"." || path.iter().any(|c| b"*?[\\".contains(c)) {
            return Err(Error::InvalidInput(
                "path for a single-item filter must be a plain relative name".into(),
            ));
        }
        let mut rules = Vec::new();
        let mut prefix = Vec::new();
        let comps: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
        for (i, c) in comps.iter().enumerate() {
            prefix.push(b'/');
            prefix.extend_from_slice(c);
            if i + 1 < comps.len() {
                rules.push(FilterRule::Include([&prefix[..], b"/"].concat()));
            }
        }
        if is_dir {
            rules.push(FilterRule::Include([&prefix[..], b"/***"].concat()));
        } else {
            rules.push(FilterRule::Include(prefix));
        }
        rules.push(FilterRule::Exclude(b"*".to_vec()));
        Ok(rules)
    }

    /// The rule as rsync writes it: `+ PATTERN` or `- PATTERN`.
    pub fn text(&self) -> Vec<u8> {
        let (p, pat) = match self {
            FilterRule::Include(p) => (&b"+ "[..], p),
            FilterRule::Exclude(p) => (&b"- "[..], p),
        };
        [p, pat].concat()
    }

    fn validate(&self) -> Result<()> {
        let (FilterRule::Include(p) | FilterRule::Exclude(p)) = self;
        if p.is_empty() || p.len() > MAX_PATTERN || p.contains(&0) || p.contains(&b'\n') {
            return Err(Error::InvalidInput(format!(
                "invalid filter pattern {:?}",
                String::from_utf8_lossy(p)
            )));
        }
        Ok(())
    }
}

/// Checks every rule.
pub fn validate(rules: &[FilterRule]) -> Result<()> {
    rules.iter().try_for_each(FilterRule::validate)
}

/// Appends the wire form of `rules` including the terminating 0.
pub fn encode(out: &mut Vec<u8>, rules: &[FilterRule]) {
    for r in rules {
        let t = r.text();
        codec::put_i32(out, t.len() as i32);
        out.extend_from_slice(&t);
    }
    codec::put_i32(out, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_item_rules() {
        let r = FilterRule::only(b"a/b/file", false).unwrap();
        let t: Vec<String> = r
            .iter()
            .map(|x| String::from_utf8(x.text()).unwrap())
            .collect();
        assert_eq!(t, ["+ /a/", "+ /a/b/", "+ /a/b/file", "- *"]);
        let r = FilterRule::only(b"dir/", true).unwrap();
        let t: Vec<String> = r
            .iter()
            .map(|x| String::from_utf8(x.text()).unwrap())
            .collect();
        assert_eq!(t, ["+ /dir/***", "- *"]);
        assert!(FilterRule::only(b"../x", false).is_err());
        assert!(FilterRule::only(b"a*", false).is_err());
        let mut out = Vec::new();
        encode(&mut out, &[FilterRule::Exclude(b"x".to_vec())]);
        assert_eq!(out, [3, 0, 0, 0, b'-', b' ', b'x', 0, 0, 0, 0]);
        assert!(validate(&[FilterRule::Include(b"a\nb".to_vec())]).is_err());
    }
}
