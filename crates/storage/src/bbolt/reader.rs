//! Reads a bbolt file (see the parent module for the format), bounded and checked: it
//! reads pages with positioned reads (no mmap, so a damaged file cannot fault the
//! process), and every length, offset, page id and page type is checked against the
//! page and the file before it is used. Damage is reported as [`BoltError::Corrupt`]
//! naming the file and the byte offset, never a panic; no allocation exceeds the pages
//! the file actually holds; a page reference cycle or a tree deeper than
//! [`MAX_DEPTH`] is refused; keys must be strictly increasing across a bucket.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    fnv64a, le_u32, le_u64, meta_off, BoltError, BoltResult, BranchElem, LeafElem, PageHeader,
    BUCKET_HEADER, BUCKET_LEAF_FLAG, ELEM_SIZE, FLAG_BRANCH, FLAG_LEAF, FLAG_META, MAGIC,
    PAGE_HEADER, VERSION,
};

/// Deepest B+tree (and bucket nesting) accepted; bbolt trees of any real size are far
/// shallower.
pub const MAX_DEPTH: usize = 64;

/// An open bbolt file.
pub struct BoltReader {
    file: File,
    path: PathBuf,
    page_size: u64,
    /// High-water mark from the meta page in use.
    pgid: u64,
    root: u64,
    txid: u64,
}

/// A row of a bucket as the reader hands it out.
pub enum Row<'a> {
    Value { key: &'a [u8], value: &'a [u8] },
    Bucket { key: &'a [u8] },
}

/// Visits one leaf element: (flags, key, value, file offset of the value).
type Visit<'a> = dyn FnMut(u32, &[u8], &[u8], u64) -> BoltResult<()> + 'a;

/// Where a bucket's rows live.
#[derive(Clone, Debug)]
enum Root {
    Page(u64),
    /// An inline bucket's leaf page, with the file offset it was read at.
    Inline(Vec<u8>, u64),
}

impl BoltReader {
    /// Opens `path` and validates its meta pages (magic, version, checksum, page size,
    /// high-water mark within the file).
    pub fn open(path: &Path) -> BoltResult<BoltReader> {
        let file = File::open(path).map_err(|source| BoltError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| BoltError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut r = BoltReader {
            file,
            path: path.to_path_buf(),
            page_size: 0,
            pgid: 0,
            root: 0,
            txid: 0,
        };
        // The first meta page says the page size; meta 1 is one page later.
        let mut first = vec![0u8; 4096.min(len as usize)];
        r.read_at(&mut first, 0)?;
        let mut best: Option<(u64, u64, u64, u64)> = None;
        let mut errors = Vec::new();
        let mut page_size = None;
        match Self::check_meta(&first, len) {
            Ok(m) => {
                page_size = Some(m.0);
                best = Some(m);
            }
            Err(e) => errors.push(format!("meta page 0: {e}")),
        }
        // Without a valid meta 0, try the page sizes bbolt can use for meta 1.
        let sizes: Vec<u64> = match page_size {
            Some(ps) => vec![ps],
            None => vec![4096, 512, 1024, 2048, 8192, 16384, 32768, 65536],
        };
        for ps in sizes {
            if ps + 128 > len {
                continue;
            }
            let mut buf = vec![0u8; 128];
            r.read_at(&mut buf, ps)?;
            match Self::check_meta(&buf, len) {
                Ok(m) if m.0 == ps => {
                    if best.is_none_or(|b| m.3 > b.3) {
                        best = Some(m);
                    }
                    break;
                }
                Ok(_) => errors.push("meta page 1: page size disagrees".into()),
                Err(e) => errors.push(format!("meta page 1: {e}")),
            }
        }
        let Some((ps, root, pgid, txid)) = best else {
            return Err(r.corrupt(0, format!("no valid meta page ({})", errors.join("; "))));
        };
        r.page_size = ps;
        r.root = root;
        r.pgid = pgid;
        r.txid = txid;
        Ok(r)
    }

    /// (page size, root pgid, high-water mark, txid) of a valid meta page.
    fn check_meta(b: &[u8], file_len: u64) -> Result<(u64, u64, u64, u64), String> {
        if b.len() < meta_off::CHECKSUM + 8 {
            return Err(format!("file of {file_len} bytes is too short"));
        }
        let flags = PageHeader::decode(b).flags;
        if flags & FLAG_META == 0 {
            return Err(format!("not a meta page (flags {flags:#x})"));
        }
        if le_u32(b, meta_off::MAGIC) != MAGIC {
            return Err("bad magic".into());
        }
        if le_u32(b, meta_off::VERSION) != VERSION {
            return Err(format!("version {}", le_u32(b, meta_off::VERSION)));
        }
        let sum = fnv64a(&b[meta_off::MAGIC..meta_off::CHECKSUM]);
        if le_u64(b, meta_off::CHECKSUM) != sum {
            return Err("checksum mismatch".into());
        }
        let ps = u64::from(le_u32(b, meta_off::PAGE_SIZE));
        if !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(format!("page size {ps}"));
        }
        let pgid = le_u64(b, meta_off::PGID);
        let root = le_u64(b, meta_off::ROOT);
        if pgid < 3 || pgid.checked_mul(ps).is_none_or(|end| end > file_len) {
            return Err(format!(
                "high-water mark {pgid} pages of {ps} bytes is beyond the file ({file_len} bytes)"
            ));
        }
        if root < 2 || root >= pgid {
            return Err(format!("root page {root} outside 2..{pgid}"));
        }
        Ok((ps, root, pgid, le_u64(b, meta_off::TXID)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Bytes in use (high-water mark x page size): what bbolt calls the size.
    pub fn size(&self) -> u64 {
        self.pgid * self.page_size
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn corrupt(&self, offset: u64, reason: String) -> BoltError {
        BoltError::Corrupt {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> BoltResult<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::UnexpectedEof => self.corrupt(
                    offset,
                    format!("file ends inside a {}-byte read", buf.len()),
                ),
                _ => BoltError::Io {
                    path: self.path.clone(),
                    source,
                },
            })
    }

    /// Reads page `id` with its overflow pages, checking its header.
    fn page(&self, id: u64) -> BoltResult<Vec<u8>> {
        if id < 2 || id >= self.pgid {
            return Err(self.corrupt(
                0,
                format!("reference to page {id}, outside 2..{}", self.pgid),
            ));
        }
        let at = id * self.page_size;
        let mut head = vec![0u8; self.page_size as usize];
        self.read_at(&mut head, at)?;
        let header = PageHeader::decode(&head);
        if header.id != id {
            return Err(self.corrupt(at, format!("page {id} says it is page {}", header.id)));
        }
        let overflow = u64::from(header.overflow);
        if id + overflow >= self.pgid {
            return Err(self.corrupt(
                at + 12,
                format!(
                    "page {id} overflows {overflow} pages, past the high-water mark {}",
                    self.pgid
                ),
            ));
        }
        if overflow > 0 {
            // Bounded: the pages exist in the file (checked against the high-water mark,
            // which open() checked against the file's length).
            head.resize(((overflow + 1) * self.page_size) as usize, 0);
            self.read_at(&mut head[self.page_size as usize..], at + self.page_size)?;
        }
        Ok(head)
    }

    /// The top-level bucket names, in order.
    pub fn buckets(&self) -> BoltResult<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        self.walk(&Root::Page(self.root), 0, &mut |row| {
            if let Row::Bucket { key } = row {
                names.push(key.to_vec());
            }
            Ok(())
        })?;
        Ok(names)
    }

    /// Calls `f` with every row of the top-level bucket `name`, in key order. Nested
    /// buckets are reported as [`Row::Bucket`] and not entered.
    pub fn for_each(
        &self,
        name: &[u8],
        f: &mut dyn FnMut(Row<'_>) -> BoltResult<()>,
    ) -> BoltResult<()> {
        let root = self.find_bucket(name)?.ok_or_else(|| BoltError::NoBucket {
            path: self.path.clone(),
            bucket: String::from_utf8_lossy(name).into_owned(),
        })?;
        self.walk(&root, 0, f)
    }

    /// Whether the top-level bucket `name` exists.
    pub fn has_bucket(&self, name: &[u8]) -> BoltResult<bool> {
        Ok(self.find_bucket(name)?.is_some())
    }

    fn find_bucket(&self, name: &[u8]) -> BoltResult<Option<Root>> {
        let mut found = None;
        let mut value_at = 0u64;
        self.walk_raw(
            &Root::Page(self.root),
            0,
            &mut Vec::new(),
            &mut None,
            &mut |flags, key, value, at| {
                if key == name && flags & BUCKET_LEAF_FLAG != 0 {
                    found = Some(value.to_vec());
                    value_at = at;
                }
                Ok(())
            },
        )?;
        let Some(v) = found else { return Ok(None) };
        if v.len() < BUCKET_HEADER {
            return Err(self.corrupt(value_at, format!("bucket header of {} bytes", v.len())));
        }
        let root = le_u64(&v, 0);
        if root == 0 {
            Ok(Some(Root::Inline(
                v[BUCKET_HEADER..].to_vec(),
                value_at + 16,
            )))
        } else {
            Ok(Some(Root::Page(root)))
        }
    }

    fn walk(
        &self,
        root: &Root,
        depth: usize,
        f: &mut dyn FnMut(Row<'_>) -> BoltResult<()>,
    ) -> BoltResult<()> {
        self.walk_raw(
            root,
            depth,
            &mut Vec::new(),
            &mut None,
            &mut |flags, key, value, _| {
                if flags & BUCKET_LEAF_FLAG != 0 {
                    f(Row::Bucket { key })
                } else {
                    f(Row::Value { key, value })
                }
            },
        )
    }

    /// Visits every leaf element under `root` in order: (flags, key, value, file offset
    /// of the element). `stack` holds the pages being visited (cycle check); `last`
    /// the previous key (order check).
    fn walk_raw(
        &self,
        root: &Root,
        depth: usize,
        stack: &mut Vec<u64>,
        last: &mut Option<Vec<u8>>,
        f: &mut Visit<'_>,
    ) -> BoltResult<()> {
        let (page, base) = match root {
            Root::Page(id) => {
                if depth > MAX_DEPTH || stack.contains(id) {
                    return Err(self.corrupt(
                        id * self.page_size,
                        format!("page {id} is referenced in a cycle or too deep a tree"),
                    ));
                }
                (self.page(*id)?, id * self.page_size)
            }
            Root::Inline(bytes, at) => (bytes.clone(), *at),
        };
        if page.len() < PAGE_HEADER {
            return Err(self.corrupt(base, "inline page shorter than its header".into()));
        }
        let PageHeader { flags, count, .. } = PageHeader::decode(&page);
        let count = usize::from(count);
        if PAGE_HEADER + count * ELEM_SIZE > page.len() {
            return Err(self.corrupt(
                base + 10,
                format!("{count} elements do not fit a page of {} bytes", page.len()),
            ));
        }
        let span = |at: usize, pos: u32, len: u64| -> BoltResult<(usize, usize)> {
            let start = at as u64 + u64::from(pos);
            let end = start + len;
            if end > page.len() as u64 {
                return Err(self.corrupt(
                    base + at as u64,
                    format!(
                        "element data {start}..{end} beyond the page's {} bytes",
                        page.len()
                    ),
                ));
            }
            Ok((start as usize, end as usize))
        };
        if let Root::Page(id) = root {
            stack.push(*id);
        }
        if flags == FLAG_LEAF {
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEM_SIZE;
                let e = LeafElem::decode(&page, at);
                let (ksize, vsize) = (u64::from(e.ksize), u64::from(e.vsize));
                let (ks, ke) = span(at, e.pos, ksize + vsize)?;
                let key = &page[ks..ks + ksize as usize];
                self.check_order(last, key, base + at as u64)?;
                f(
                    e.flags,
                    key,
                    &page[ks + ksize as usize..ke],
                    base + ks as u64 + ksize,
                )?;
            }
        } else if flags == FLAG_BRANCH {
            if matches!(root, Root::Inline(..)) {
                return Err(self.corrupt(base, "an inline bucket holds a branch page".into()));
            }
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEM_SIZE;
                let e = BranchElem::decode(&page, at);
                span(at, e.pos, u64::from(e.ksize))?;
                self.walk_raw(&Root::Page(e.pgid), depth + 1, stack, last, f)?;
            }
        } else {
            return Err(self.corrupt(
                base + 8,
                format!("page of type {flags:#x} where a branch or leaf page belongs"),
            ));
        }
        if let Root::Page(_) = root {
            stack.pop();
        }
        Ok(())
    }

    fn check_order(&self, last: &mut Option<Vec<u8>>, key: &[u8], at: u64) -> BoltResult<()> {
        if let Some(prev) = last {
            if key <= prev.as_slice() {
                return Err(self.corrupt(
                    at,
                    format!("key {key:x?} is not greater than the key before it {prev:x?}"),
                ));
            }
        }
        *last = Some(key.to_vec());
        Ok(())
    }
}
