//! Reads a bbolt file (see the parent module for the format), bounded and checked: it
//! reads pages with positioned reads (no mmap, so a damaged file cannot fault the
//! process), and every length, offset, page id and page type is checked against the
//! page and the file before it is used. Damage is reported as [`BoltError::Corrupt`]
//! naming the file and the byte offset, never a panic; no allocation exceeds the pages
//! the file actually holds; keys must be strictly increasing across a bucket.
//!
//! Work is bounded too: a walk over a bucket reads each page at most once (a page
//! reached twice, by a reference cycle or by two parents, is refused, as bbolt's own
//! consistency check refuses it), trees deeper than [`MAX_DEPTH`] are refused, and a
//! bucket is found by one descent of the root tree, not a scan of it.

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

/// Visits one value row: (key, value, file offset of the value).
pub type ValueAt<'a> = dyn FnMut(&[u8], &[u8], u64) -> BoltResult<()> + 'a;

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

    /// The keys of rows in the root bucket that are not buckets (bbolt never writes
    /// such a row: one found is damage, which callers report).
    pub fn root_values(&self) -> BoltResult<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.walk(&Root::Page(self.root), 0, &mut |row| {
            if let Row::Value { key, .. } = row {
                keys.push(key.to_vec());
            }
            Ok(())
        })?;
        Ok(keys)
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

    /// Calls `f` with every value row (nested buckets skipped) of the top-level bucket
    /// `name`, in key order, with the file offset its value starts at: what a tool that
    /// patches a stopped member's file in place needs (see [`super::testing`]).
    pub fn for_each_value_at(&self, name: &[u8], f: &mut ValueAt<'_>) -> BoltResult<()> {
        let root = self.find_bucket(name)?.ok_or_else(|| BoltError::NoBucket {
            path: self.path.clone(),
            bucket: String::from_utf8_lossy(name).into_owned(),
        })?;
        let mut seen = Seen::new(self.pgid);
        self.walk_raw(
            &root,
            0,
            &mut seen,
            &mut Vec::new(),
            &mut |flags, key, value, at| {
                if flags & BUCKET_LEAF_FLAG == 0 {
                    f(key, value, at)?;
                }
                Ok(())
            },
        )
    }

    /// Whether the top-level bucket `name` exists.
    pub fn has_bucket(&self, name: &[u8]) -> BoltResult<bool> {
        Ok(self.find_bucket(name)?.is_some())
    }

    /// Looks `name` up in the root bucket as bbolt does: one path down the root tree,
    /// choosing at each branch page the last child whose first key is <= `name`. At most
    /// [`MAX_DEPTH`] pages are read, so the cost does not grow with the number of buckets.
    fn find_bucket(&self, name: &[u8]) -> BoltResult<Option<Root>> {
        let mut id = self.root;
        for _ in 0..=MAX_DEPTH {
            let page = self.page(id)?;
            let base = id * self.page_size;
            let (flags, count) = self.elements(&page, base)?;
            if flags == FLAG_BRANCH {
                let mut child = None;
                for i in 0..count {
                    let at = PAGE_HEADER + i * ELEM_SIZE;
                    let e = BranchElem::decode(&page, at);
                    let (ks, ke) = self.span(&page, base, at, e.pos, u64::from(e.ksize))?;
                    if child.is_none() || &page[ks..ke] <= name {
                        child = Some(e.pgid);
                    } else {
                        break;
                    }
                }
                let Some(child) = child else { return Ok(None) };
                id = child;
                continue;
            }
            if flags != FLAG_LEAF {
                return Err(self.not_a_tree_page(base, flags));
            }
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEM_SIZE;
                let e = LeafElem::decode(&page, at);
                let ksize = u64::from(e.ksize);
                let (ks, ke) = self.span(&page, base, at, e.pos, ksize + u64::from(e.vsize))?;
                let key_end = ks + ksize as usize;
                if &page[ks..key_end] != name || e.flags & BUCKET_LEAF_FLAG == 0 {
                    continue;
                }
                let v = &page[key_end..ke];
                let value_at = base + key_end as u64;
                if v.len() < BUCKET_HEADER {
                    return Err(
                        self.corrupt(value_at, format!("bucket header of {} bytes", v.len()))
                    );
                }
                let root = le_u64(v, 0);
                return Ok(Some(if root == 0 {
                    Root::Inline(v[BUCKET_HEADER..].to_vec(), value_at + 16)
                } else {
                    Root::Page(root)
                }));
            }
            return Ok(None);
        }
        Err(self.corrupt(
            self.root * self.page_size,
            format!("the root bucket's tree is deeper than {MAX_DEPTH} pages"),
        ))
    }

    fn walk(
        &self,
        root: &Root,
        depth: usize,
        f: &mut dyn FnMut(Row<'_>) -> BoltResult<()>,
    ) -> BoltResult<()> {
        let mut seen = Seen::new(self.pgid);
        self.walk_raw(
            root,
            depth,
            &mut seen,
            &mut Vec::new(),
            &mut |flags, key, value, _| {
                if flags & BUCKET_LEAF_FLAG != 0 {
                    f(Row::Bucket { key })
                } else {
                    f(Row::Value { key, value })
                }
            },
        )
    }

    /// The flags and element count of a branch or leaf page, checked to fit the page.
    fn elements(&self, page: &[u8], base: u64) -> BoltResult<(u16, usize)> {
        if page.len() < PAGE_HEADER {
            return Err(self.corrupt(base, "inline page shorter than its header".into()));
        }
        let PageHeader { flags, count, .. } = PageHeader::decode(page);
        let count = usize::from(count);
        if PAGE_HEADER + count * ELEM_SIZE > page.len() {
            return Err(self.corrupt(
                base + 10,
                format!("{count} elements do not fit a page of {} bytes", page.len()),
            ));
        }
        Ok((flags, count))
    }

    /// The bytes `len` long starting `pos` after the element at `at`, checked to lie
    /// inside the page.
    fn span(
        &self,
        page: &[u8],
        base: u64,
        at: usize,
        pos: u32,
        len: u64,
    ) -> BoltResult<(usize, usize)> {
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
    }

    fn not_a_tree_page(&self, base: u64, flags: u16) -> BoltError {
        self.corrupt(
            base + 8,
            format!("page of type {flags:#x} where a branch or leaf page belongs"),
        )
    }

    /// Visits every leaf element under `root` in order: (flags, key, value, file offset
    /// of the value). `seen` marks the pages (overflow pages included) this walk has
    /// read: a page reached twice, by a cycle or by two parents, is refused, so a walk
    /// reads each page of the file at most once. `last` holds the previous key (order
    /// check).
    fn walk_raw(
        &self,
        root: &Root,
        depth: usize,
        seen: &mut Seen,
        last: &mut Vec<u8>,
        f: &mut Visit<'_>,
    ) -> BoltResult<()> {
        let page_buf;
        let (page, base): (&[u8], u64) = match root {
            Root::Page(id) => {
                let at = id.saturating_mul(self.page_size);
                if depth > MAX_DEPTH {
                    return Err(
                        self.corrupt(at, format!("page {id} is deeper than {MAX_DEPTH} levels"))
                    );
                }
                if seen.get(*id) {
                    return Err(self.corrupt(
                        at,
                        format!("page {id} is referenced twice (a cycle or a shared page)"),
                    ));
                }
                page_buf = self.page(*id)?;
                let overflow = u64::from(PageHeader::decode(&page_buf).overflow);
                for p in *id..=*id + overflow {
                    if seen.get(p) {
                        return Err(self.corrupt(
                            at,
                            format!("page {id} overlaps page {p}, which is already in use"),
                        ));
                    }
                    seen.set(p);
                }
                (&page_buf, at)
            }
            Root::Inline(bytes, at) => (bytes.as_slice(), *at),
        };
        let (flags, count) = self.elements(page, base)?;
        if flags == FLAG_LEAF {
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEM_SIZE;
                let e = LeafElem::decode(page, at);
                let (ksize, vsize) = (u64::from(e.ksize), u64::from(e.vsize));
                let (ks, ke) = self.span(page, base, at, e.pos, ksize + vsize)?;
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
                let e = BranchElem::decode(page, at);
                self.span(page, base, at, e.pos, u64::from(e.ksize))?;
                self.walk_raw(&Root::Page(e.pgid), depth + 1, seen, last, f)?;
            }
        } else {
            return Err(self.not_a_tree_page(base, flags));
        }
        Ok(())
    }

    /// `last` is empty before the first key (bbolt keys are never empty: an empty key
    /// is refused here too).
    fn check_order(&self, last: &mut Vec<u8>, key: &[u8], at: u64) -> BoltResult<()> {
        if key.is_empty() {
            return Err(self.corrupt(at, "an empty key".into()));
        }
        if !last.is_empty() && key <= last.as_slice() {
            return Err(self.corrupt(
                at,
                format!("key {key:x?} is not greater than the key before it {last:x?}"),
            ));
        }
        last.clear();
        last.extend_from_slice(key);
        Ok(())
    }
}

/// One bit per page below the high-water mark: pgid / 8 bytes, bounded by the file
/// (open() checked the high-water mark against the file's length).
struct Seen(Vec<u64>);

impl Seen {
    fn new(pgid: u64) -> Seen {
        Seen(vec![0; pgid.div_ceil(64) as usize])
    }

    /// Ids at or past the high-water mark read as unseen; `page()` refuses them.
    fn get(&self, id: u64) -> bool {
        self.0
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn set(&mut self, id: u64) {
        if let Some(w) = self.0.get_mut((id / 64) as usize) {
            *w |= 1 << (id % 64);
        }
    }
}
