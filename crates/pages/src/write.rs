//! The write transaction: changes a private copy of the tree's path, then commits it.
//!
//! A transaction starts from the newest commit. Changing a row copies the nodes on its
//! path into memory (each one's pages are then freed by this commit) and changes them
//! there; readers keep reading the committed nodes. At commit ([`WriteTx::commit`]) the
//! changed nodes are cut into nodes of at most a page (a row bigger than a page gets a
//! node of its own, as many pages long as it needs), written to free pages, and the
//! branches above them rewritten up to a new root.
//!
//! Nodes are kept from growing without bound inside a big transaction (a leaf past
//! [`EAGER_SPLIT`] bytes is split in two at once) and from staying nearly empty after
//! deletes (a changed node under a quarter of a page is merged into a neighbour, which
//! the commit cuts again if the two are too big together). Keys that only grow (MVCC
//! revisions) fill each leaf before the next is started: the cut takes as many rows as
//! fit from the left, so the leaf an append lands in is the last and only partly full.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::format::{
    self, encode_branch, encode_leaf, Meta, NodeRef, NodeView, BRANCH_ENTRY, HEADER, LEAF_ENTRY,
    PAGE, PAGE_U64, TABLES,
};
use crate::read::{get_in, Row};
use crate::space::Space;
use crate::{lock, tree_key, Error, Inner, Nodes, Result};

/// A changed node bigger than this is split in two right away.
const EAGER_SPLIT: usize = 16 * PAGE;
/// A changed node smaller than this is merged with a neighbour.
const UNDERFULL: usize = PAGE / 4;

enum Slot {
    Clean(NodeRef),
    Dirty(Box<Node>),
}

enum Node {
    Leaf {
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        bytes: usize,
        /// The last row added went past every other of its table: the leaf is being
        /// appended to (MVCC revisions), so its cut fills pages from the left; otherwise
        /// it cuts evenly.
        tail: bool,
    },
    /// Children with the lower bound of each one's keys.
    Branch { children: Vec<(Vec<u8>, Slot)> },
}

impl Node {
    fn size(&self) -> usize {
        match self {
            Node::Leaf { bytes, .. } => *bytes,
            Node::Branch { children } => {
                HEADER
                    + children
                        .iter()
                        .map(|(k, _)| BRANCH_ENTRY + k.len())
                        .sum::<usize>()
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Node::Leaf { rows, .. } => rows.is_empty(),
            Node::Branch { children } => children.is_empty(),
        }
    }

    /// Splits off the upper half (by bytes) as a new node: (its lower bound, node).
    fn split_half(&mut self) -> Option<(Vec<u8>, Node)> {
        let half = self.size() / 2;
        match self {
            Node::Leaf { rows, bytes, tail } => {
                if rows.len() < 2 {
                    return None;
                }
                let mut acc = HEADER;
                let mut at = rows.len() - 1;
                for (i, row) in rows.iter().enumerate() {
                    acc += leaf_entry(row);
                    if acc >= half {
                        at = (i + 1).clamp(1, rows.len() - 1);
                        break;
                    }
                }
                if *tail {
                    // Appends: keep whole pages on the left (the commit cuts them full)
                    // and only the last, partly filled page's rows on the right, where
                    // the next rows land. Halving left a partly filled page behind at
                    // every split: a bulk copy's leaves were a ninth empty.
                    if let Some(&start) = cut_starts(rows, 1, leaf_entry).last() {
                        if start > 0 {
                            at = start;
                        }
                    }
                }
                let right = rows.split_off(at);
                let moved = format::leaf_len(right.iter().map(|(k, v)| (&k[..], &v[..]))) - HEADER;
                *bytes -= moved;
                let key = right.first()?.0.clone();
                Some((
                    key,
                    Node::Leaf {
                        rows: right,
                        bytes: HEADER + moved,
                        tail: *tail,
                    },
                ))
            }
            Node::Branch { children } => {
                if children.len() < 2 {
                    return None;
                }
                let at = (children.len() / 2).max(1);
                let right = children.split_off(at);
                let key = right.first()?.0.clone();
                Some((key, Node::Branch { children: right }))
            }
        }
    }
}

/// The store's one write transaction (see [`crate::Store::begin_write`]). Dropping it
/// without [`WriteTx::commit`] discards its changes.
pub struct WriteTx {
    inner: Arc<Inner>,
    base: Meta,
    root: Option<Slot>,
    height: u32,
    rows: [u64; TABLES],
    /// Committed nodes this transaction copied or dropped.
    freed: Vec<NodeRef>,
    /// A change failed part-way (an I/O error, a damaged node): the tree in memory may
    /// be half changed, so the transaction refuses to commit.
    poisoned: bool,
    /// Nodes [`WriteTx::flush`] wrote and no commit has published yet: if the
    /// transaction is dropped, their pages are free again at once.
    flushed: Vec<NodeRef>,
}

impl WriteTx {
    pub(crate) fn new(inner: Arc<Inner>, base: Meta) -> WriteTx {
        WriteTx {
            inner,
            base,
            root: base.root.map(Slot::Clean),
            height: base.height,
            rows: base.rows,
            freed: Vec::new(),
            poisoned: false,
            flushed: Vec::new(),
        }
    }

    /// The row's value as this transaction sees it.
    pub fn get(&self, table: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = tree_key(table, key)?;
        let mut slot = match &self.root {
            Some(s) => s,
            None => return Ok(None),
        };
        loop {
            match slot {
                Slot::Clean(at) => {
                    return Ok(get_in(writer_nodes(&self.inner, &self.base), *at, &k)?
                        .map(|r: Row| r.value().to_vec()))
                }
                Slot::Dirty(node) => match &**node {
                    Node::Leaf { rows, .. } => {
                        return Ok(rows
                            .binary_search_by(|(rk, _)| rk.as_slice().cmp(&k))
                            .ok()
                            .map(|i| rows[i].1.clone()))
                    }
                    Node::Branch { children } => slot = &children[route(children, &k)].1,
                },
            }
        }
    }

    /// Rows in `table` as this transaction sees it.
    pub fn len(&self, table: u8) -> u64 {
        self.rows.get(table as usize).copied().unwrap_or(0)
    }

    pub fn is_empty(&self, table: u8) -> bool {
        self.len(table) == 0
    }

    /// Sets the row; whether it is new.
    pub fn insert(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<bool> {
        let done = self.insert_unchecked(table, key, value);
        self.poison_on(done)
    }

    fn insert_unchecked(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<bool> {
        let k = tree_key(table, key)?;
        let added = match self.root.as_mut() {
            None => {
                let bytes = HEADER + LEAF_ENTRY + k.len() + value.len();
                self.root = Some(Slot::Dirty(Box::new(Node::Leaf {
                    rows: vec![(k, value.to_vec())],
                    bytes,
                    tail: true,
                })));
                self.height = 1;
                true
            }
            Some(root) => {
                let added = insert_in(
                    writer_nodes(&self.inner, &self.base),
                    root,
                    &k,
                    value,
                    &mut self.freed,
                )?;
                self.grow_root();
                added
            }
        };
        if added {
            self.rows[table as usize] += 1;
        }
        Ok(added)
    }

    /// Removes the row; whether it was there.
    pub fn remove(&mut self, table: u8, key: &[u8]) -> Result<bool> {
        let done = self.remove_unchecked(table, key);
        self.poison_on(done)
    }

    fn remove_unchecked(&mut self, table: u8, key: &[u8]) -> Result<bool> {
        if self.get(table, key)?.is_none() {
            return Ok(false);
        }
        let k = tree_key(table, key)?;
        if let Some(root) = self.root.as_mut() {
            remove_in(
                writer_nodes(&self.inner, &self.base),
                root,
                &k,
                &mut self.freed,
            )?;
        }
        self.shrink_root();
        self.rows[table as usize] -= 1;
        Ok(true)
    }

    /// Every key of `table` as this transaction sees it, in order.
    pub fn keys(&self, table: u8) -> Result<Vec<Vec<u8>>> {
        let lo = tree_key(table, &[])?;
        let hi = vec![table + 1];
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            collect_keys(
                writer_nodes(&self.inner, &self.base),
                root,
                &lo,
                &hi,
                &mut out,
            )?;
        }
        for k in &mut out {
            k.remove(0);
        }
        Ok(out)
    }

    /// Removes every row of `table`; how many there were.
    pub fn clear(&mut self, table: u8) -> Result<u64> {
        let done = self.clear_unchecked(table);
        self.poison_on(done)
    }

    fn clear_unchecked(&mut self, table: u8) -> Result<u64> {
        let keys = self.keys(table)?;
        for k in &keys {
            self.remove(table, k)?;
        }
        Ok(keys.len() as u64)
    }

    /// Removes every row of every table, without reading the leaves.
    pub fn clear_all(&mut self) -> Result<()> {
        let done = self.clear_all_unchecked();
        self.poison_on(done)
    }

    fn clear_all_unchecked(&mut self) -> Result<()> {
        if let Some(root) = self.root.take() {
            free_all(
                writer_nodes(&self.inner, &self.base),
                root,
                self.height,
                &mut self.freed,
            )?;
        }
        self.height = 0;
        self.rows = [0; TABLES];
        Ok(())
    }

    /// Writes the changed nodes to free pages now, so a large transaction (a bulk load)
    /// does not hold them all in memory until it commits. Nothing is published: readers
    /// and a crash still see the last commit.
    pub fn flush(&mut self) -> Result<()> {
        let done = self.flush_unchecked();
        self.poison_on(done)
    }

    fn flush_unchecked(&mut self) -> Result<()> {
        let Some(Slot::Dirty(_)) = &self.root else {
            return Ok(());
        };
        let mut writes = Vec::new();
        let inner = self.inner.clone();
        let (root, height) = {
            let mut space = lock(&inner.space);
            self.spill_root(&mut space, &mut writes)?
        };
        self.flushed
            .extend(writes.iter().map(|(pgid, bytes)| NodeRef {
                pgid: *pgid,
                pages: (bytes.len() / PAGE) as u32,
            }));
        write_pages(&self.inner, &writes)?;
        self.root = root.map(Slot::Clean);
        self.height = height;
        Ok(())
    }

    /// Writes the changed tree into `space` (queued in `writes`): its new root and height.
    fn spill_root(
        &mut self,
        space: &mut Space,
        writes: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(Option<NodeRef>, u32)> {
        Ok(match self.root.take() {
            None => (None, 0),
            Some(Slot::Clean(r)) => (Some(r), self.height),
            Some(Slot::Dirty(node)) => {
                let txid = self.base.txid + 1;
                let mut height = self.height;
                let mut parts = spill(*node, height, txid, space, writes)?;
                while parts.len() > 1 {
                    let children = parts
                        .into_iter()
                        .map(|(k, r)| (k, Slot::Clean(r)))
                        .collect();
                    height += 1;
                    parts = spill(Node::Branch { children }, height, txid, space, writes)?;
                }
                (parts.pop().map(|(_, r)| r), height)
            }
        })
    }

    /// Marks the transaction unusable if a change failed part-way (a refused table id
    /// changed nothing).
    fn poison_on<T>(&mut self, done: Result<T>) -> Result<T> {
        if matches!(done, Err(ref e) if !matches!(e, Error::NoSuchTable(_))) {
            self.poisoned = true;
        }
        done
    }

    /// A root that grew past [`EAGER_SPLIT`] gets a branch above it.
    fn grow_root(&mut self) {
        let Some(Slot::Dirty(node)) = self.root.as_mut() else {
            return;
        };
        if node.size() <= EAGER_SPLIT {
            return;
        }
        let Some((key, right)) = node.split_half() else {
            return;
        };
        let Some(left) = self.root.take() else {
            return;
        };
        let mut children = vec![(Vec::new(), left), (key, Slot::Dirty(Box::new(right)))];
        if let Some((_, Slot::Dirty(l))) = children.first_mut() {
            children[0].0 = first_key(l);
        }
        self.root = Some(Slot::Dirty(Box::new(Node::Branch { children })));
        self.height += 1;
    }

    /// An empty root goes; a branch root with one child gives way to it.
    fn shrink_root(&mut self) {
        loop {
            match self.root.as_mut() {
                Some(Slot::Dirty(node)) if node.is_empty() => {
                    self.root = None;
                    self.height = 0;
                }
                Some(Slot::Dirty(node)) => match &mut **node {
                    Node::Branch { children } if children.len() == 1 => {
                        self.root = children.pop().map(|(_, s)| s);
                        self.height -= 1;
                        continue;
                    }
                    _ => {}
                },
                _ => {}
            }
            return;
        }
    }

    /// Commits: the changed nodes are written to free pages and become the newest
    /// commit, which readers that begin from now on see. `durable`: also `fdatasync`,
    /// write the meta slot and `fdatasync` again before returning (see the crate docs).
    /// On an error nothing is published (the pages it took are lost until the file is
    /// opened again), and the store takes no commit after it: whether the failed one
    /// reached the disk is unknown (its meta may have), so pages it wrote must not be
    /// written again. A transaction with a change that failed part-way is refused.
    pub fn commit(mut self, durable: bool) -> Result<()> {
        let inner = self.inner.clone();
        if self.poisoned {
            return Err(Error::Failed(
                "an earlier change of this transaction failed part-way".into(),
            ));
        }
        if inner.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Failed(format!(
                "an earlier commit to {} failed; nothing is written to it again",
                inner.path.display()
            )));
        }
        let done = self.publish(durable);
        match &done {
            // Published: the flushed nodes are part of the new commit's tree.
            Ok(()) => self.flushed.clear(),
            Err(_) => inner
                .failed
                .store(true, std::sync::atomic::Ordering::SeqCst),
        }
        done
    }

    fn publish(&mut self, durable: bool) -> Result<()> {
        let inner = self.inner.clone();
        let txid = self.base.txid + 1;
        let (durable_bound, reader_bound) = inner.release_bounds();
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        let (root, height, hwm) = {
            let mut space = lock(&inner.space);
            space.release(durable_bound, reader_bound);
            let (root, height) = self.spill_root(&mut space, &mut writes)?;
            (root, height, space.hwm)
        };
        write_pages(&inner, &writes)?;
        let meta = Meta {
            txid,
            root,
            hwm,
            height,
            rows: self.rows,
        };
        if durable {
            let slot = 1 - lock(&inner.state).durable_slot;
            inner.write_meta(&meta, slot).map_err(|e| inner.io(e))?;
            let mut st = lock(&inner.state);
            st.meta = meta;
            st.durable_txid = txid;
            st.durable_slot = slot;
        } else {
            lock(&inner.state).meta = meta;
        }
        let freed = std::mem::take(&mut self.freed);
        let (durable_bound, reader_bound) = inner.release_bounds();
        let mut space = lock(&inner.space);
        if durable {
            space.made_durable();
        }
        space.retire(txid, freed);
        space.release(durable_bound, reader_bound);
        // Free pages at the end are in no tree (see `space`): the file gives them back.
        if space.shrink() {
            inner
                .file
                .set_len(space.hwm * PAGE_U64)
                .map_err(|e| inner.io(e))?;
        }
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.flushed.is_empty() {
            lock(&self.inner.space).give_back(std::mem::take(&mut self.flushed));
        }
        self.inner.end_write();
    }
}

/// The nodes a writer reads: the base commit's, and those it flushed itself (written
/// with the id its commit will have).
fn writer_nodes<'a>(inner: &'a Inner, base: &Meta) -> Nodes<'a> {
    Nodes::new(inner, base.txid + 1)
}

/// Index of the child of `children` whose keys may include `key`.
fn route(children: &[(Vec<u8>, Slot)], key: &[u8]) -> usize {
    match children.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
        Ok(i) => i,
        Err(i) => i.saturating_sub(1),
    }
}

fn first_key(node: &Node) -> Vec<u8> {
    match node {
        Node::Leaf { rows, .. } => rows.first().map(|(k, _)| k.clone()).unwrap_or_default(),
        Node::Branch { children } => children.first().map(|(k, _)| k.clone()).unwrap_or_default(),
    }
}

/// Appends the tree keys in `lo..hi` under `slot` to `out`.
fn collect_keys(
    nodes: Nodes,
    slot: &Slot,
    lo: &[u8],
    hi: &[u8],
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    match slot {
        Slot::Clean(at) => {
            let node = nodes.get(*at)?;
            let v = NodeView::trusted(&node);
            for i in 0..v.len() {
                if v.is_leaf() {
                    let k = v.key(i);
                    if k >= lo && k < hi {
                        out.push(k.to_vec());
                    }
                } else if overlaps(v.key(i), (i + 1 < v.len()).then(|| v.key(i + 1)), lo, hi) {
                    collect_keys(nodes, &Slot::Clean(v.child(i)), lo, hi, out)?;
                }
            }
        }
        Slot::Dirty(node) => match &**node {
            Node::Leaf { rows, .. } => out.extend(
                rows.iter()
                    .filter(|(k, _)| k.as_slice() >= lo && k.as_slice() < hi)
                    .map(|(k, _)| k.clone()),
            ),
            Node::Branch { children } => {
                for (i, (k, child)) in children.iter().enumerate() {
                    let next = children.get(i + 1).map(|(n, _)| n.as_slice());
                    if overlaps(k, next, lo, hi) {
                        collect_keys(nodes, child, lo, hi, out)?;
                    }
                }
            }
        },
    }
    Ok(())
}

/// Whether a child whose keys lie in `bound..next` may hold keys in `lo..hi`.
fn overlaps(bound: &[u8], next: Option<&[u8]>, lo: &[u8], hi: &[u8]) -> bool {
    bound < hi && next.is_none_or(|n| n > lo)
}

/// Frees every committed node under `slot` (a tree of `height` levels), reading only
/// branches.
fn free_all(nodes: Nodes, slot: Slot, height: u32, freed: &mut Vec<NodeRef>) -> Result<()> {
    match slot {
        Slot::Clean(at) => {
            freed.push(at);
            if height > 1 {
                let node = nodes.get(at)?;
                let v = NodeView::trusted(&node);
                v.expect_level(at, height)?;
                for i in 0..v.len() {
                    free_all(nodes, Slot::Clean(v.child(i)), height - 1, freed)?;
                }
            }
        }
        Slot::Dirty(node) => {
            if let Node::Branch { children } = *node {
                for (_, child) in children {
                    free_all(nodes, child, height.saturating_sub(1), freed)?;
                }
            }
        }
    }
    Ok(())
}

/// A committed node read into memory.
fn load(nodes: Nodes, at: NodeRef) -> Result<Node> {
    let bytes = nodes.get(at)?;
    let v = NodeView::trusted(&bytes);
    Ok(if v.is_leaf() {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..v.len())
            .map(|i| (v.key(i).to_vec(), v.value(i).to_vec()))
            .collect();
        let bytes = format::leaf_len(rows.iter().map(|(k, v)| (&k[..], &v[..])));
        Node::Leaf {
            rows,
            bytes,
            tail: false,
        }
    } else {
        Node::Branch {
            children: (0..v.len())
                .map(|i| (v.key(i).to_vec(), Slot::Clean(v.child(i))))
                .collect(),
        }
    })
}

/// The slot's node, copied into memory first if it is committed (its pages are freed).
fn dirty<'s>(nodes: Nodes, slot: &'s mut Slot, freed: &mut Vec<NodeRef>) -> Result<&'s mut Node> {
    if let Slot::Clean(at) = *slot {
        let node = load(nodes, at)?;
        freed.push(at);
        *slot = Slot::Dirty(Box::new(node));
    }
    match slot {
        Slot::Dirty(node) => Ok(node),
        Slot::Clean(at) => Err(Error::Corrupt(format!(
            "node at page {} not copied",
            at.pgid
        ))),
    }
}

fn insert_in(
    nodes: Nodes,
    slot: &mut Slot,
    key: &[u8],
    value: &[u8],
    freed: &mut Vec<NodeRef>,
) -> Result<bool> {
    match dirty(nodes, slot, freed)? {
        Node::Leaf { rows, bytes, tail } => {
            match rows.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                Ok(i) => {
                    *bytes = *bytes + value.len() - rows[i].1.len();
                    rows[i].1 = value.to_vec();
                    Ok(false)
                }
                Err(i) => {
                    // Past every row of its table here (the next row, if any, belongs to
                    // the next table: MVCC rows land just before the `meta` rows).
                    *tail = rows
                        .get(i)
                        .is_none_or(|(next, _)| next.first() != key.first());
                    *bytes += LEAF_ENTRY + key.len() + value.len();
                    rows.insert(i, (key.to_vec(), value.to_vec()));
                    Ok(true)
                }
            }
        }
        Node::Branch { children } => {
            if children.is_empty() {
                return Err(Error::Corrupt("empty branch in a write".into()));
            }
            let i = route(children, key);
            if key < children[i].0.as_slice() {
                children[i].0 = key.to_vec();
            }
            if let Slot::Clean(at) = children[i].1 {
                if appends_past_big_leaf(nodes, at, key)? {
                    // A leaf of one big row stays as it is: the new row starts the next
                    // leaf (rewriting the big one for every append doubled the writes).
                    let leaf = Node::Leaf {
                        rows: vec![(key.to_vec(), value.to_vec())],
                        bytes: HEADER + LEAF_ENTRY + key.len() + value.len(),
                        tail: true,
                    };
                    children.insert(i + 1, (key.to_vec(), Slot::Dirty(Box::new(leaf))));
                    return Ok(true);
                }
            }
            let added = insert_in(nodes, &mut children[i].1, key, value, freed)?;
            split_if_big(children, i);
            Ok(added)
        }
    }
}

/// Whether the committed node at `at` is a leaf of more than a page whose keys are all
/// below `key`.
fn appends_past_big_leaf(nodes: Nodes, at: NodeRef, key: &[u8]) -> Result<bool> {
    if at.pages < 2 {
        return Ok(false);
    }
    let node = nodes.get(at)?;
    let v = NodeView::trusted(&node);
    Ok(v.is_leaf() && v.len() > 0 && v.key(v.len() - 1) < key)
}

fn split_if_big(children: &mut Vec<(Vec<u8>, Slot)>, i: usize) {
    if let Slot::Dirty(node) = &mut children[i].1 {
        if node.size() > EAGER_SPLIT {
            if let Some((key, right)) = node.split_half() {
                children.insert(i + 1, (key, Slot::Dirty(Box::new(right))));
            }
        }
    }
}

fn remove_in(nodes: Nodes, slot: &mut Slot, key: &[u8], freed: &mut Vec<NodeRef>) -> Result<()> {
    match dirty(nodes, slot, freed)? {
        Node::Leaf { rows, bytes, .. } => {
            if let Ok(i) = rows.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                *bytes -= leaf_entry(&rows.remove(i));
            }
            Ok(())
        }
        Node::Branch { children } => {
            if children.is_empty() {
                return Err(Error::Corrupt("empty branch in a write".into()));
            }
            let i = route(children, key);
            remove_in(nodes, &mut children[i].1, key, freed)?;
            let (empty, small) = match &children[i].1 {
                Slot::Dirty(n) => (n.is_empty(), n.size() < UNDERFULL),
                Slot::Clean(_) => (false, false),
            };
            if empty {
                children.remove(i);
            } else if small && children.len() > 1 {
                merge(nodes, children, i, freed)?;
            }
            Ok(())
        }
    }
}

/// Merges child `i` with a neighbour (both leaves or both branches: they are at the same
/// depth); the result is split again at commit if it is too big.
fn merge(
    nodes: Nodes,
    children: &mut Vec<(Vec<u8>, Slot)>,
    i: usize,
    freed: &mut Vec<NodeRef>,
) -> Result<()> {
    let (l, r) = if i + 1 < children.len() {
        (i, i + 1)
    } else {
        (i - 1, i)
    };
    dirty(nodes, &mut children[l].1, freed)?;
    dirty(nodes, &mut children[r].1, freed)?;
    let (_, right) = children.remove(r);
    let (Slot::Dirty(left), Slot::Dirty(right)) = (&mut children[l].1, right) else {
        return Err(Error::Corrupt("merge of nodes not copied".into()));
    };
    match (&mut **left, *right) {
        (
            Node::Leaf { rows, bytes, .. },
            Node::Leaf {
                rows: more,
                bytes: more_bytes,
                ..
            },
        ) => {
            *bytes += more_bytes - HEADER;
            rows.extend(more);
        }
        (Node::Branch { children: kids }, Node::Branch { children: more }) => kids.extend(more),
        _ => {
            return Err(Error::Corrupt(
                "a leaf and a branch at the same depth".into(),
            ))
        }
    }
    split_if_big(children, l);
    Ok(())
}

/// Writes a changed node of `level` (and the changed nodes below it) as nodes of at
/// most a page each, written by commit `txid` (see the module docs); returns them with
/// their lower bounds, in order. A leaf anywhere but on level 1 (or a branch on it) is
/// refused: the tree's shape would be wrong, and opening it would take pages it uses
/// for free ones.
fn spill(
    node: Node,
    level: u32,
    txid: u64,
    space: &mut Space,
    writes: &mut Vec<(u64, Vec<u8>)>,
) -> Result<Vec<(Vec<u8>, NodeRef)>> {
    let leaf = matches!(node, Node::Leaf { .. });
    if leaf != (level == 1) {
        return Err(Error::Corrupt(format!(
            "a changed {} on level {level} (a bug in the write path)",
            if leaf { "leaf" } else { "branch" }
        )));
    }
    let mut out = Vec::new();
    match node {
        Node::Leaf { rows, tail, .. } => {
            let parts = if tail {
                cut(rows, 1, leaf_entry)
            } else {
                cut_evenly(rows, leaf_entry)
            };
            for part in parts {
                let bytes = encode_leaf(&part, txid)?;
                let key = part.first().map(|(k, _)| k.clone()).unwrap_or_default();
                out.push((key, place(bytes, space, writes)));
            }
        }
        Node::Branch { children } => {
            let mut refs = Vec::with_capacity(children.len());
            for (key, child) in children {
                match child {
                    Slot::Clean(r) => refs.push((key, r)),
                    Slot::Dirty(n) => {
                        for (j, (k, r)) in spill(*n, level - 1, txid, space, writes)?
                            .into_iter()
                            .enumerate()
                        {
                            // The first part keeps the bound its parent had for it.
                            refs.push((if j == 0 { key.clone() } else { k }, r));
                        }
                    }
                }
            }
            // At least two children a branch: with keys too long for two to share a page,
            // a part each would leave as many branches as children, and the levels
            // `spill_root` adds above them would never come down to one root.
            for part in cut(refs, 2, |(k, _)| BRANCH_ENTRY + k.len()) {
                let bytes = encode_branch(&part, level, txid)?;
                let key = part.first().map(|(k, _)| k.clone()).unwrap_or_default();
                out.push((key, place(bytes, space, writes)));
            }
        }
    }
    Ok(out)
}

/// Bytes a leaf row takes in its node.
fn leaf_entry((k, v): &(Vec<u8>, Vec<u8>)) -> usize {
    LEAF_ENTRY + k.len() + v.len()
}

/// Where each run of [`cut`] begins.
fn cut_starts<T>(items: &[T], min: usize, size: impl Fn(&T) -> usize) -> Vec<usize> {
    let mut starts = vec![0];
    let mut used = HEADER;
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        let begun = starts.last().copied().unwrap_or(0);
        if i - begun >= min.max(1) && used + s > PAGE {
            starts.push(i);
            used = HEADER;
        }
        used += s;
    }
    starts
}

/// Cuts `items` into runs that each fit a page (a lone item that does not gets a run of
/// its own), filling each run before starting the next; a run is ended only once it
/// holds `min` items (so it may then span pages).
fn cut<T>(mut items: Vec<T>, min: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    if items.is_empty() {
        return Vec::new();
    }
    let starts = cut_starts(&items, min, size);
    let mut parts: Vec<Vec<T>> = starts
        .iter()
        .skip(1)
        .rev()
        .map(|at| items.split_off(*at))
        .collect();
    parts.push(items);
    parts.reverse();
    parts
}

/// Cuts `items` into as few runs as fit pages, of about equal size: a leaf changed in
/// its middle leaves room on both sides for the rows that land there next (filling from
/// the left left a one-row leaf that random keys seldom reach: 10-25% full).
fn cut_evenly<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let total: usize = items.iter().map(&size).sum();
    let runs = total.div_ceil(PAGE - HEADER).max(1);
    if runs == 1 {
        return cut(items, 1, size);
    }
    let target = total / runs;
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for item in items {
        let s = size(&item);
        if !cur.is_empty() && (used + s + HEADER > PAGE || used >= target) {
            parts.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += s;
        cur.push(item);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

fn place(bytes: Vec<u8>, space: &mut Space, writes: &mut Vec<(u64, Vec<u8>)>) -> NodeRef {
    let pages = (bytes.len() / PAGE) as u32;
    let pgid = space.alloc(pages);
    writes.push((pgid, bytes));
    NodeRef { pgid, pages }
}

/// Writes the nodes (runs of adjacent pages in one `pwrite`) and caches them.
fn write_pages(inner: &Inner, writes: &[(u64, Vec<u8>)]) -> Result<()> {
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|i| writes[*i].0);
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0u64;
    for i in order {
        let (pgid, bytes) = &writes[i];
        if !run.is_empty() && run_start + (run.len() / PAGE) as u64 != *pgid {
            inner
                .file
                .write_all_at(&run, run_start * PAGE_U64)
                .map_err(|e| inner.io(e))?;
            run.clear();
        }
        if run.is_empty() {
            run_start = *pgid;
        }
        run.extend_from_slice(bytes);
        inner.cache.put(*pgid, Arc::from(bytes.as_slice()));
    }
    if !run.is_empty() {
        inner
            .file
            .write_all_at(&run, run_start * PAGE_U64)
            .map_err(|e| inner.io(e))?;
    }
    Ok(())
}
