//! Key-range permission checks, as etcd's auth store makes them: the permissions of
//! all of a user's roles are merged per kind (read, write), and a request on the key
//! range `[key, range_end)` is allowed only if the merged ranges cover it entirely.
//!
//! Conventions (etcd's): an empty `range_end` is the single key `key`; a `range_end`
//! of `"\0"` means "every key from `key` on" (from-key), both in a permission and in
//! a request; `READWRITE` counts as both kinds.

use skiff_proto::authpb::{permission::Type as PermType, Permission};

/// What an operation needs on a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// A key interval `[start, end)`; `end: None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

/// The interval a (key, range_end) pair names.
fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    if range_end.is_empty() {
        // A single key: [key, key + "\0").
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            start: key.to_vec(),
            end: Some(end),
        }
    } else if range_end == [0] {
        Interval {
            start: key.to_vec(),
            end: None,
        }
    } else {
        Interval {
            start: key.to_vec(),
            end: Some(range_end.to_vec()),
        }
    }
}

/// Whether a permission of type `t` grants `need`.
fn grants(t: i32, need: Need) -> bool {
    match PermType::try_from(t) {
        Ok(PermType::Readwrite) => true,
        Ok(PermType::Read) => need == Need::Read,
        Ok(PermType::Write) => need == Need::Write,
        Err(_) => false,
    }
}

/// Whether the permissions `perms` (of all of a user's roles) cover `[key, range_end)`
/// for `need`.
pub fn covers<'a>(
    perms: impl IntoIterator<Item = &'a Permission>,
    need: Need,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let want = interval(key, range_end);
    if let Some(end) = &want.end {
        if end.as_slice() <= want.start.as_slice() {
            // An empty range (etcd answers it empty); nothing to protect, but etcd's
            // interval check refuses it unless a permission contains its start.
            return covers(perms, need, key, &[]);
        }
    }
    let mut ivs: Vec<Interval> = perms
        .into_iter()
        .filter(|p| grants(p.perm_type, need))
        .map(|p| interval(&p.key, &p.range_end))
        .filter(|iv| {
            iv.end
                .as_ref()
                .is_none_or(|e| e.as_slice() > iv.start.as_slice())
        })
        .collect();
    ivs.sort_by(|a, b| a.start.cmp(&b.start));
    // Walk the merged intervals from the wanted start.
    let mut reached = want.start.clone();
    for iv in ivs {
        if iv.start.as_slice() > reached.as_slice() {
            continue;
        }
        match iv.end {
            None => return true,
            Some(e) if e > reached => {
                reached = e;
                if want.end.as_ref().is_some_and(|we| reached >= *we) {
                    return true;
                }
            }
            Some(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: PermType, key: &str, end: &[u8]) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec().into(),
            range_end: end.to_vec().into(),
        }
    }

    #[test]
    fn single_keys_prefixes_and_from_key() {
        let perms = [
            p(PermType::Read, "k", b""),
            p(PermType::Readwrite, "p", b"q"),
            p(PermType::Write, "f", &[0]),
        ];
        assert!(covers(&perms, Need::Read, b"k", b""));
        assert!(!covers(&perms, Need::Write, b"e", b""), "e is below f");
        assert!(
            !covers(&perms, Need::Read, b"k", b"l"),
            "k1 is not readable"
        );
        assert!(covers(&perms, Need::Read, b"p", b"q"));
        assert!(covers(&perms, Need::Write, b"p1", b"p2"));
        assert!(
            !covers(&perms, Need::Read, b"p", &[0]),
            "from p on is more than p*"
        );
        assert!(covers(&perms, Need::Write, b"zzz", b""));
        assert!(covers(&perms, Need::Write, b"f", &[0]));
        assert!(!covers(&perms, Need::Write, b"e", &[0]));
        assert!(!covers(&perms, Need::Read, b"", &[0]));
    }

    #[test]
    fn adjacent_permissions_merge() {
        let perms = [p(PermType::Read, "a", b"c"), p(PermType::Read, "c", b"e")];
        assert!(covers(&perms, Need::Read, b"a", b"e"));
        assert!(covers(&perms, Need::Read, b"b", b"d"));
        assert!(!covers(&perms, Need::Read, b"a", b"f"));
        let gap = [p(PermType::Read, "a", b"c"), p(PermType::Read, "d", b"e")];
        assert!(!covers(&gap, Need::Read, b"a", b"e"));
    }
}
