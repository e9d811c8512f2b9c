//! Writes a bbolt file (see the parent module for the format) from rows given in key
//! order, one bucket at a time, without holding the database in memory: each bucket's
//! B+tree is built bottom-up, one open page per tree level, and every page is written
//! to the file the moment it is full. Memory is O(tree depth x page size) plus the
//! largest single row.
//!
//! Guarantees: keys of a bucket are strictly increasing (a caller handing them
//! otherwise gets [`BoltError::Invalid`], never a file bbolt would reject); every page
//! below the high-water mark is used exactly once (the freelist is empty), so bbolt's
//! consistency check passes; small buckets without nested buckets are stored inline, as
//! bbolt stores them; both meta pages are written last, so a file cut short by a crash
//! has invalid meta pages and is refused by any reader.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{
    fnv64a, meta_off, BoltError, BoltResult, BranchElem, LeafElem, PageHeader, BUCKET_HEADER,
    BUCKET_LEAF_FLAG, ELEM_SIZE, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, FLAG_META, MAGIC,
    MAX_KEY_SIZE, PAGE_HEADER, PAGE_SIZE, VERSION,
};

/// The value a finished bucket takes in its parent: a bucket header, plus the bucket's
/// leaf page when it is inline.
#[derive(Debug, Clone)]
pub struct BucketRef(Vec<u8>);

/// A bbolt file being written; pages are appended in allocation order.
pub struct BoltWriter {
    out: BufWriter<File>,
    path: PathBuf,
    /// The next page id to allocate (= pages written so far, meta pages included).
    next: u64,
}

/// What [`BoltWriter::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// File size in bytes (pages x page size).
    pub bytes: u64,
    pub pages: u64,
}

impl BoltWriter {
    /// Creates (or truncates) `path` and reserves the two meta pages.
    pub fn create(path: &Path) -> BoltResult<BoltWriter> {
        let file = File::create(path).map_err(|source| BoltError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = BoltWriter {
            out: BufWriter::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
            next: 0,
        };
        // Placeholders: the real meta pages go in last (see the module docs).
        let zero = vec![0u8; PAGE_SIZE * 2];
        w.write_raw(&zero)?;
        w.next = 2;
        Ok(w)
    }

    fn io(&self, source: std::io::Error) -> BoltError {
        BoltError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn write_raw(&mut self, b: &[u8]) -> BoltResult<()> {
        self.out.write_all(b).map_err(|e| self.io(e))
    }

    fn invalid(&self, reason: String) -> BoltError {
        BoltError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }

    /// Writes one page (with overflow pages if it needs them) holding `elems`; returns
    /// its id.
    fn write_page(&mut self, kind: Kind, elems: &[Elem]) -> BoltResult<u64> {
        let mut buf = encode_page(kind, elems)?;
        let pages = buf.len().div_ceil(PAGE_SIZE).max(1);
        let id = self.next;
        buf.resize(pages * PAGE_SIZE, 0);
        let overflow = u32::try_from(pages - 1)
            .map_err(|_| self.invalid("a page larger than bbolt can describe".into()))?;
        let header = PageHeader {
            id,
            overflow,
            ..PageHeader::decode(&buf)
        };
        header.encode(&mut buf);
        self.write_raw(&buf)?;
        self.next += pages as u64;
        Ok(id)
    }

    /// Writes the root bucket holding `buckets` (top-level bucket names, strictly
    /// increasing, with what [`BucketBuilder::finish`] returned), an empty freelist and the
    /// two meta pages, then syncs the file.
    pub fn finish(mut self, buckets: Vec<(Vec<u8>, BucketRef)>) -> BoltResult<WriteSummary> {
        let mut root = BucketBuilder::new();
        for (name, b) in buckets {
            root.put_bucket(&mut self, &name, b)?;
        }
        let root_pgid = root.finish_pages(&mut self)?;
        let freelist = self.next;
        let mut page = vec![0u8; PAGE_SIZE];
        PageHeader {
            id: freelist,
            flags: FLAG_FREELIST,
            count: 0,
            overflow: 0,
        }
        .encode(&mut page);
        self.write_raw(&page)?;
        self.next += 1;
        let pgid = self.next;
        self.out.flush().map_err(|e| self.io(e))?;
        let mut file = self.out.into_inner().map_err(|e| BoltError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        let io = |source| BoltError::Io {
            path: self.path.clone(),
            source,
        };
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // bbolt's own snapshot writer does the same: meta 1 one transaction older.
        for (id, txid) in [(0u64, 2u64), (1, 1)] {
            file.write_all(&meta_page(id, root_pgid, freelist, pgid, txid))
                .map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        Ok(WriteSummary {
            bytes: pgid * PAGE_SIZE as u64,
            pages: pgid,
        })
    }
}

/// One meta page.
pub(crate) fn meta_page(id: u64, root: u64, freelist: u64, pgid: u64, txid: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    PageHeader {
        id,
        flags: FLAG_META,
        count: 0,
        overflow: 0,
    }
    .encode(&mut p);
    p[meta_off::MAGIC..meta_off::MAGIC + 4].copy_from_slice(&MAGIC.to_le_bytes());
    p[meta_off::VERSION..meta_off::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    p[meta_off::PAGE_SIZE..meta_off::PAGE_SIZE + 4]
        .copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    p[meta_off::ROOT..meta_off::ROOT + 8].copy_from_slice(&root.to_le_bytes());
    p[meta_off::FREELIST..meta_off::FREELIST + 8].copy_from_slice(&freelist.to_le_bytes());
    p[meta_off::PGID..meta_off::PGID + 8].copy_from_slice(&pgid.to_le_bytes());
    p[meta_off::TXID..meta_off::TXID + 8].copy_from_slice(&txid.to_le_bytes());
    let sum = fnv64a(&p[meta_off::MAGIC..meta_off::CHECKSUM]);
    p[meta_off::CHECKSUM..meta_off::CHECKSUM + 8].copy_from_slice(&sum.to_le_bytes());
    p
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Leaf,
    Branch,
}

/// One element of a page being built: a leaf row (`flags`, key, value) or a branch
/// entry (key, child page id).
struct Elem {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
    child: u64,
}

impl Elem {
    fn size(&self, kind: Kind) -> usize {
        ELEM_SIZE
            + self.key.len()
            + match kind {
                Kind::Leaf => self.value.len(),
                Kind::Branch => 0,
            }
    }
}

/// Encodes a page (header with id 0 and no overflow, elements, data), unpadded.
fn encode_page(kind: Kind, elems: &[Elem]) -> BoltResult<Vec<u8>> {
    let size = PAGE_HEADER + elems.iter().map(|e| e.size(kind)).sum::<usize>();
    let mut buf = vec![0u8; size];
    let flags = match kind {
        Kind::Leaf => FLAG_LEAF,
        Kind::Branch => FLAG_BRANCH,
    };
    let count = u16::try_from(elems.len()).map_err(|_| BoltError::Invalid {
        path: PathBuf::new(),
        reason: "more than 65535 elements on a page".into(),
    })?;
    PageHeader {
        id: 0,
        flags,
        count,
        overflow: 0,
    }
    .encode(&mut buf);
    let mut data = PAGE_HEADER + ELEM_SIZE * elems.len();
    for (i, e) in elems.iter().enumerate() {
        let at = PAGE_HEADER + ELEM_SIZE * i;
        let pos = (data - at) as u32;
        match kind {
            Kind::Leaf => LeafElem {
                flags: e.flags,
                pos,
                ksize: e.key.len() as u32,
                vsize: e.value.len() as u32,
            }
            .encode(&mut buf, at),
            Kind::Branch => BranchElem {
                pos,
                ksize: e.key.len() as u32,
                pgid: e.child,
            }
            .encode(&mut buf, at),
        }
        buf[data..data + e.key.len()].copy_from_slice(&e.key);
        data += e.key.len();
        if kind == Kind::Leaf {
            buf[data..data + e.value.len()].copy_from_slice(&e.value);
            data += e.value.len();
        }
    }
    Ok(buf)
}

/// One level of a tree being built: the elements of its open page and how many pages
/// it has written.
struct Level {
    kind: Kind,
    elems: Vec<Elem>,
    size: usize,
    written: u64,
}

impl Level {
    fn new(kind: Kind) -> Level {
        Level {
            kind,
            elems: Vec::new(),
            size: PAGE_HEADER,
            written: 0,
        }
    }
}

/// Builds one bucket's tree from rows in strictly increasing key order.
pub struct BucketBuilder {
    levels: Vec<Level>,
    last_key: Option<Vec<u8>>,
    rows: u64,
}

impl Default for BucketBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BucketBuilder {
    pub fn new() -> BucketBuilder {
        BucketBuilder {
            levels: vec![Level::new(Kind::Leaf)],
            last_key: None,
            rows: 0,
        }
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a key/value row; `key` must be greater than every key added before.
    pub fn put(&mut self, w: &mut BoltWriter, key: &[u8], value: &[u8]) -> BoltResult<()> {
        self.add(w, 0, key, value.to_vec())
    }

    /// Adds a nested bucket under `key` (same ordering rule as [`BucketBuilder::put`]).
    pub fn put_bucket(&mut self, w: &mut BoltWriter, key: &[u8], b: BucketRef) -> BoltResult<()> {
        self.add(w, BUCKET_LEAF_FLAG, key, b.0)
    }

    fn add(
        &mut self,
        w: &mut BoltWriter,
        flags: u32,
        key: &[u8],
        value: Vec<u8>,
    ) -> BoltResult<()> {
        if key.is_empty() || key.len() > MAX_KEY_SIZE {
            return Err(w.invalid(format!("key of {} bytes (1..={MAX_KEY_SIZE})", key.len())));
        }
        if u32::try_from(value.len()).is_err() {
            return Err(w.invalid(format!("value of {} bytes", value.len())));
        }
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(w.invalid(format!(
                    "keys not strictly increasing: {key:x?} after {last:x?}"
                )));
            }
        }
        self.last_key = Some(key.to_vec());
        self.rows += 1;
        self.push(
            w,
            0,
            Elem {
                flags,
                key: key.to_vec(),
                value,
                child: 0,
            },
        )
    }

    /// Appends `e` to level `i`, first writing the level's page if `e` does not fit.
    fn push(&mut self, w: &mut BoltWriter, i: usize, e: Elem) -> BoltResult<()> {
        let level = &self.levels[i];
        let need = e.size(level.kind);
        if !level.elems.is_empty() && level.size + need > PAGE_SIZE {
            self.flush(w, i)?;
        }
        let level = &mut self.levels[i];
        level.size += need;
        level.elems.push(e);
        Ok(())
    }

    /// Writes level `i`'s open page and adds an entry for it to level `i + 1`.
    fn flush(&mut self, w: &mut BoltWriter, i: usize) -> BoltResult<u64> {
        let kind = self.levels[i].kind;
        let elems = std::mem::take(&mut self.levels[i].elems);
        self.levels[i].size = PAGE_HEADER;
        let id = w.write_page(kind, &elems)?;
        self.levels[i].written += 1;
        let first = elems.into_iter().next().map(|e| e.key).unwrap_or_default();
        if self.levels.len() == i + 1 {
            self.levels.push(Level::new(Kind::Branch));
        }
        self.push(
            w,
            i + 1,
            Elem {
                flags: 0,
                key: first,
                value: Vec::new(),
                child: id,
            },
        )?;
        Ok(id)
    }

    /// Finishes the bucket: inline if it is small enough (bbolt's rule: one leaf of at
    /// most a quarter page, no nested buckets), otherwise its pages are written.
    pub fn finish(self, w: &mut BoltWriter) -> BoltResult<BucketRef> {
        let leaf = &self.levels[0];
        let inline = self.levels.len() == 1
            && leaf.written == 0
            && leaf.size <= PAGE_SIZE / 4
            && leaf.elems.iter().all(|e| e.flags & BUCKET_LEAF_FLAG == 0);
        let mut value = vec![0u8; BUCKET_HEADER];
        if inline {
            value.extend_from_slice(&encode_page(Kind::Leaf, &leaf.elems)?);
        } else {
            let root = self.finish_pages(w)?;
            value[0..8].copy_from_slice(&root.to_le_bytes());
        }
        Ok(BucketRef(value))
    }

    /// Writes every open page, bottom-up, and returns the root page's id.
    fn finish_pages(mut self, w: &mut BoltWriter) -> BoltResult<u64> {
        let mut i = 0;
        loop {
            let top = i + 1 == self.levels.len();
            if top && self.levels[i].written == 0 {
                // The only page of the top level is the root.
                let kind = self.levels[i].kind;
                let elems = std::mem::take(&mut self.levels[i].elems);
                return w.write_page(kind, &elems);
            }
            if !self.levels[i].elems.is_empty() {
                self.flush(w, i)?;
            }
            i += 1;
        }
    }
}
