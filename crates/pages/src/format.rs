//! The bytes on disk: meta pages and nodes.
//!
//! A file is a run of [`PAGE`]-byte pages. Pages 0 and 1 are the two meta slots; every
//! other page belongs to a node (a node larger than a page takes a run of pages) or is
//! free. Nothing else is stored: which pages are free is what the tree of the newest
//! meta does not reach (the store finds it by walking the branch nodes at open).
//!
//! **Meta** (the first [`META_LEN`] bytes of its page, the rest zero): magic, format,
//! page size, transaction id, the root's page and page count (0 pages: an empty tree),
//! the tree's height (so the walk at open reads branches only), the file's page count (`hwm`) and the row count of each table, then a CRC32C of all
//! of it. A torn or altered meta fails its checksum and the other slot is used.
//!
//! **Node**: a 24-byte header (CRC32C of the node's bytes after the checksum field,
//! kind, a byte unused, level (`u16`: 1 for a leaf, a branch's is one more than its
//! children's), entry count, length in bytes, the id of the commit that wrote it), one
//! `u32` offset per entry, then the entries:
//! a leaf's are `key len u32, value len u32, key, value`; a branch's are
//! `key len u32, child pages u32, child page u64, key` where the key is a lower bound
//! of the child's keys (every key of child i is below key i+1). All integers are
//! little-endian. A node is validated whole (checksum, kind, every offset and length
//! within it) when it is read, so reading its entries afterwards cannot go out of bounds.
//!
//! **Commit ids in nodes.** A tree's nodes were all written by its own commit or older
//! ones, so a node carrying a newer id than the tree being read is a page reused since:
//! refused as corrupt. It tells a meta slot torn by a crash (the older slot's tree is
//! whole: no commit writes a page the newest durable tree reaches) from one damaged
//! later, after newer commits reused the older tree's pages (their nodes carry valid
//! checksums, so only the id shows they are not that tree's).

use crate::{Error, Result};

/// Page size in bytes (etcd's bbolt uses the operating system's page, 4 KiB here too).
pub const PAGE: usize = 4096;
/// Page size as a `u64`, for file offsets.
pub const PAGE_U64: u64 = PAGE as u64;
/// Tables a file can hold (ids `0..TABLES`).
pub const TABLES: usize = 16;

const MAGIC: &[u8; 8] = b"SKIFFPG1";
/// 2: nodes carry their level and the id of the commit that wrote them (1 had a
/// 16-byte header).
const FORMAT: u32 = 2;
/// Bytes of a meta record, checksum included.
pub const META_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4 + 4 + 8 + 8 * TABLES + 4;

pub const HEADER: usize = 24;
const KIND_LEAF: u8 = 1;
const KIND_BRANCH: u8 = 2;
/// Bytes a leaf entry takes besides its key and value (offset, two lengths).
pub const LEAF_ENTRY: usize = 4 + 8;
/// Bytes a branch entry takes besides its key (offset, key length, pages, page).
pub const BRANCH_ENTRY: usize = 4 + 4 + 4 + 8;

/// Where a node lives: its first page and how many pages it spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub pgid: u64,
    pub pages: u32,
}

/// One meta slot's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub txid: u64,
    pub root: Option<NodeRef>,
    /// Pages in the file the tree may use (`0..hwm`); pages 0 and 1 are the meta slots.
    pub hwm: u64,
    /// Levels of the tree: 0 empty, 1 a root leaf, n: leaves n-1 branches below the root.
    pub height: u32,
    pub rows: [u64; TABLES],
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(PAGE);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT.to_le_bytes());
        b.extend_from_slice(&(PAGE as u32).to_le_bytes());
        b.extend_from_slice(&self.txid.to_le_bytes());
        let (pgid, pages) = self.root.map_or((0, 0), |r| (r.pgid, r.pages));
        b.extend_from_slice(&pgid.to_le_bytes());
        b.extend_from_slice(&pages.to_le_bytes());
        b.extend_from_slice(&self.height.to_le_bytes());
        b.extend_from_slice(&self.hwm.to_le_bytes());
        for n in self.rows {
            b.extend_from_slice(&n.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(PAGE, 0);
        b
    }

    /// The record in `page`, or why it is not one (all zeros, torn, another format).
    pub fn decode(page: &[u8]) -> std::result::Result<Meta, String> {
        let b = page.get(..META_LEN).ok_or("short meta page")?;
        if b.iter().all(|x| *x == 0) {
            return Err("empty meta slot".into());
        }
        let (body, crc) = b.split_at(META_LEN - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("meta checksum mismatch".into());
        }
        if &body[..8] != MAGIC {
            return Err("not a skiff page file (bad magic)".into());
        }
        let format = u32_at(body, 8);
        if format != FORMAT {
            return Err(format!(
                "page file format {format}, this build reads {FORMAT}"
            ));
        }
        let page_size = u32_at(body, 12) as usize;
        if page_size != PAGE {
            return Err(format!("page size {page_size}, this build uses {PAGE}"));
        }
        let txid = u64_at(body, 16);
        let pgid = u64_at(body, 24);
        let pages = u32_at(body, 32);
        let height = u32_at(body, 36);
        let hwm = u64_at(body, 40);
        let mut rows = [0u64; TABLES];
        for (i, r) in rows.iter_mut().enumerate() {
            *r = u64_at(body, 48 + 8 * i);
        }
        let root = (pages > 0).then_some(NodeRef { pgid, pages });
        if hwm < 2
            || root.is_some_and(|r| {
                // Checked: a meta may say anything its checksum covers.
                r.pgid < 2
                    || r.pgid
                        .checked_add(r.pages as u64)
                        .is_none_or(|end| end > hwm)
            })
            || root.is_some() != (height > 0)
        {
            return Err(format!(
                "meta points outside the file (root {root:?}, {hwm} pages)"
            ));
        }
        Ok(Meta {
            txid,
            root,
            hwm,
            height,
            rows,
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        x.copy_from_slice(s);
    }
    u16::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

/// Pages a node of `len` bytes spans.
pub fn pages_for(len: usize) -> u32 {
    len.div_ceil(PAGE).max(1) as u32
}

/// Serialized size of a leaf holding these entries.
pub fn leaf_len<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    HEADER
        + entries
            .map(|(k, v)| LEAF_ENTRY + k.len() + v.len())
            .sum::<usize>()
}

/// Encodes a leaf written by commit `txid`, padded to whole pages.
pub fn encode_leaf(entries: &[(Vec<u8>, Vec<u8>)], txid: u64) -> Result<Vec<u8>> {
    let len = leaf_len(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let mut b = start_node(KIND_LEAF, 1, entries.len(), len, txid)?;
    let mut off = HEADER + 4 * entries.len();
    for (k, v) in entries {
        b.extend_from_slice(&(off as u32).to_le_bytes());
        off += 8 + k.len() + v.len();
    }
    for (k, v) in entries {
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(k);
        b.extend_from_slice(v);
    }
    Ok(finish_node(b))
}

/// Encodes a branch of `level` (its children's plus one) written by commit `txid`,
/// padded to whole pages.
pub fn encode_branch(entries: &[(Vec<u8>, NodeRef)], level: u32, txid: u64) -> Result<Vec<u8>> {
    let len = HEADER
        + entries
            .iter()
            .map(|(k, _)| BRANCH_ENTRY + k.len())
            .sum::<usize>();
    let mut b = start_node(KIND_BRANCH, level, entries.len(), len, txid)?;
    let mut off = HEADER + 4 * entries.len();
    for (k, _) in entries {
        b.extend_from_slice(&(off as u32).to_le_bytes());
        off += 16 + k.len();
    }
    for (k, r) in entries {
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.pages.to_le_bytes());
        b.extend_from_slice(&r.pgid.to_le_bytes());
        b.extend_from_slice(k);
    }
    Ok(finish_node(b))
}

fn start_node(kind: u8, level: u32, count: usize, len: usize, txid: u64) -> Result<Vec<u8>> {
    let (Ok(count32), Ok(len32)) = (u32::try_from(count), u32::try_from(len)) else {
        return Err(Error::TooLarge(len));
    };
    let Ok(level16) = u16::try_from(level) else {
        return Err(Error::Corrupt(format!("a tree of {level} levels")));
    };
    let mut b = Vec::with_capacity(pages_for(len) as usize * PAGE);
    b.extend_from_slice(&[0; 4]);
    b.push(kind);
    b.push(0);
    b.extend_from_slice(&level16.to_le_bytes());
    b.extend_from_slice(&count32.to_le_bytes());
    b.extend_from_slice(&len32.to_le_bytes());
    b.extend_from_slice(&txid.to_le_bytes());
    Ok(b)
}

fn finish_node(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&b[4..]);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    let padded = pages_for(b.len()) as usize * PAGE;
    b.resize(padded, 0);
    b
}

/// Refuses a node (checked before, or being checked) written by a commit newer than
/// `newest`, the commit of the tree it is read as part of.
pub fn check_written_by(b: &[u8], at: NodeRef, newest: u64) -> Result<()> {
    let txid = NodeView::trusted(b).txid();
    if txid > newest {
        return Err(Error::Corrupt(format!(
            "node at page {} was written by commit {txid}, after the tree's commit \
             {newest}: its page was reused by a commit whose meta is lost or damaged",
            at.pgid
        )));
    }
    Ok(())
}

/// A node's bytes, validated ([`NodeView::check`]); accessors never go out of bounds.
#[derive(Clone, Copy)]
pub struct NodeView<'a> {
    b: &'a [u8],
    count: usize,
    leaf: bool,
}

impl<'a> NodeView<'a> {
    /// Validates `b` (a node's pages as read) as a node of a tree written by commit
    /// `newest` or older, and returns a view of it.
    pub fn check(b: &'a [u8], at: NodeRef, newest: u64) -> Result<NodeView<'a>> {
        let bad = |why: &str| Error::Corrupt(format!("node at page {}: {why}", at.pgid));
        if b.len() < HEADER {
            return Err(bad("shorter than a header"));
        }
        let len = u32_at(b, 12) as usize;
        if len < HEADER || len > b.len() {
            return Err(bad("length outside its pages"));
        }
        if crc32c::crc32c(&b[4..len]).to_le_bytes() != b[..4] {
            return Err(bad("checksum mismatch"));
        }
        check_written_by(b, at, newest)?;
        let leaf = match b[4] {
            KIND_LEAF => true,
            KIND_BRANCH => false,
            _ => return Err(bad("unknown kind")),
        };
        let level = u16_at(b, 6);
        if level == 0 || leaf != (level == 1) {
            return Err(bad("a level that does not fit its kind"));
        }
        let count = u32_at(b, 8) as usize;
        let table_end = count
            .checked_mul(4)
            .and_then(|n| n.checked_add(HEADER))
            .filter(|end| *end <= len)
            .ok_or_else(|| bad("entry table outside the node"))?;
        let v = NodeView {
            b: &b[..len],
            count,
            leaf,
        };
        let fixed = if leaf { 8 } else { 16 };
        for i in 0..count {
            let off = u32_at(b, HEADER + 4 * i) as usize;
            let (k, extra) = (u32_at(b, off) as usize, u32_at(b, off + 4) as usize);
            let end = if leaf {
                off.checked_add(fixed + k)
                    .and_then(|e| e.checked_add(extra))
            } else {
                off.checked_add(fixed + k)
            };
            if off < table_end || end.is_none_or(|e| e > len) {
                return Err(bad("entry outside the node"));
            }
        }
        if count == 0 && !leaf {
            return Err(bad("empty branch"));
        }
        Ok(v)
    }

    /// 1 for a leaf; a branch's is one more than its children's.
    pub fn level(&self) -> u32 {
        u32::from(u16_at(self.b, 6))
    }

    /// Refuses the node (at `at`) unless it is of `level`, the one its place in the
    /// tree gives it.
    pub fn expect_level(&self, at: NodeRef, level: u32) -> Result<()> {
        if self.level() != level {
            return Err(Error::Corrupt(format!(
                "node at page {} is of level {} where level {level} belongs",
                at.pgid,
                self.level()
            )));
        }
        Ok(())
    }

    /// The id of the commit that wrote the node.
    pub fn txid(&self) -> u64 {
        u64_at(self.b, 16)
    }

    /// A view of bytes [`NodeView::check`] accepted before (the cache holds only those);
    /// reads only the header. Its accessors stay in bounds whatever the bytes are.
    pub fn trusted(b: &'a [u8]) -> NodeView<'a> {
        let len = (u32_at(b, 12) as usize).min(b.len());
        NodeView {
            b: &b[..len],
            count: u32_at(b, 8) as usize,
            leaf: b.get(4) == Some(&KIND_LEAF),
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.leaf
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn off(&self, i: usize) -> usize {
        u32_at(self.b, HEADER + 4 * i) as usize
    }

    pub fn key(&self, i: usize) -> &'a [u8] {
        let off = self.off(i);
        let k = u32_at(self.b, off) as usize;
        let start = off + if self.leaf { 8 } else { 16 };
        self.b.get(start..start + k).unwrap_or(&[])
    }

    /// A leaf entry's value as a byte range of the node.
    pub fn value_range(&self, i: usize) -> std::ops::Range<usize> {
        let off = self.off(i);
        let (k, v) = (
            u32_at(self.b, off) as usize,
            u32_at(self.b, off + 4) as usize,
        );
        let start = off + 8 + k;
        start..start + v
    }

    /// A leaf entry's key as a byte range of the node.
    pub fn key_range(&self, i: usize) -> std::ops::Range<usize> {
        let off = self.off(i);
        let k = u32_at(self.b, off) as usize;
        let start = off + if self.leaf { 8 } else { 16 };
        start..start + k
    }

    pub fn value(&self, i: usize) -> &'a [u8] {
        self.b.get(self.value_range(i)).unwrap_or(&[])
    }

    pub fn child(&self, i: usize) -> NodeRef {
        let off = self.off(i);
        NodeRef {
            pages: u32_at(self.b, off + 4),
            pgid: u64_at(self.b, off + 8),
        }
    }

    /// Leaf: `Ok(i)` if entry i has `key`, else `Err(i)` where it would go.
    pub fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Branch: the child whose keys may include `key` (the last whose bound is <= it).
    pub fn route(&self, key: &[u8]) -> usize {
        match self.search(key) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_refuses_damage() {
        let mut rows = [0; TABLES];
        rows[3] = 7;
        let m = Meta {
            txid: 9,
            root: Some(NodeRef { pgid: 4, pages: 2 }),
            hwm: 10,
            height: 2,
            rows,
        };
        let mut page = m.encode();
        assert_eq!(Meta::decode(&page), Ok(m));
        page[30] ^= 1;
        assert!(Meta::decode(&page).unwrap_err().contains("checksum"));
        assert!(Meta::decode(&[0u8; PAGE]).unwrap_err().contains("empty"));
    }

    #[test]
    fn nodes_round_trip_and_damage_is_caught() {
        let entries = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"bb".to_vec(), vec![7; 5000]),
        ];
        let b = encode_leaf(&entries, 7).unwrap();
        assert_eq!(b.len(), 2 * PAGE);
        let at = NodeRef { pgid: 2, pages: 2 };
        let v = NodeView::check(&b, at, 7).unwrap();
        assert_eq!((v.txid(), v.level()), (7, 1));
        assert!(v.is_leaf());
        assert_eq!(v.key(1), b"bb");
        assert_eq!(v.value(1), &[7; 5000][..]);
        assert_eq!(v.search(b"b"), Err(1));
        let mut bad = b.clone();
        bad[100] ^= 0x40;
        assert!(matches!(
            NodeView::check(&bad, at, 7),
            Err(Error::Corrupt(_))
        ));
        let newer = NodeView::check(&b, at, 6).err().map(|e| e.to_string());
        assert!(
            newer
                .as_deref()
                .is_some_and(|e| e.contains("written by commit 7")),
            "{newer:?}"
        );
        let br = encode_branch(
            &[
                (b"".to_vec(), at),
                (b"m".to_vec(), NodeRef { pgid: 9, pages: 1 }),
            ],
            2,
            3,
        )
        .unwrap();
        let v = NodeView::check(&br, at, 3).unwrap();
        assert_eq!(v.level(), 2);
        assert_eq!(v.route(b"a"), 0);
        assert_eq!(v.route(b"m"), 1);
        assert_eq!(v.route(b"z"), 1);
        assert_eq!(v.child(1), NodeRef { pgid: 9, pages: 1 });
    }
}
