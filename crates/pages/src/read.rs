//! Reading a committed tree: point lookups and ordered iteration over one table.

use std::ops::{Bound, Range};
use std::sync::Arc;

use crate::format::{Meta, NodeRef, NodeView};
use crate::{tree_key, Inner, Nodes, Result};

/// A row as stored: it shares the node it was read from (no copy).
#[derive(Clone)]
pub struct Row {
    node: Arc<[u8]>,
    key: Range<usize>,
    value: Range<usize>,
}

impl Row {
    /// The row's key within its table.
    pub fn key(&self) -> &[u8] {
        // The tree key's first byte is the table id.
        self.node
            .get(self.key.start + 1..self.key.end)
            .unwrap_or(&[])
    }

    pub fn value(&self) -> &[u8] {
        self.node.get(self.value.clone()).unwrap_or(&[])
    }
}

/// A view of a node checked when it was read (`Inner::node` returns only those).
fn view(node: &[u8]) -> NodeView<'_> {
    NodeView::trusted(node)
}

/// Looks `key` (a tree key) up in the committed subtree at `at`.
pub(crate) fn get_in(nodes: Nodes, mut at: NodeRef, key: &[u8]) -> Result<Option<Row>> {
    loop {
        let node = nodes.get(at)?;
        let v = view(&node);
        if v.is_leaf() {
            return Ok(match v.search(key) {
                Ok(i) => {
                    let (key, value) = (v.key_range(i), v.value_range(i));
                    Some(Row { node, key, value })
                }
                Err(_) => None,
            });
        }
        at = v.child(v.route(key));
    }
}

/// Keeps the pages of one commit from being reused while a reader or iterator of it
/// is open.
struct Pin {
    inner: Arc<Inner>,
    meta: Meta,
}

impl Pin {
    fn nodes(&self) -> Nodes<'_> {
        Nodes::new(&self.inner, self.meta.txid)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.inner.end_read(self.meta.txid);
    }
}

/// A consistent view of the store as of the last commit before it began.
pub struct ReadTx {
    pin: Arc<Pin>,
    inner: Arc<Inner>,
    meta: Meta,
}

impl ReadTx {
    /// `meta`'s commit must already be registered as read (`Store::begin_read`).
    pub(crate) fn new(inner: Arc<Inner>, meta: Meta) -> ReadTx {
        let pin = Arc::new(Pin {
            inner: inner.clone(),
            meta,
        });
        ReadTx { pin, inner, meta }
    }

    pub fn get(&self, table: u8, key: &[u8]) -> Result<Option<Row>> {
        let k = tree_key(table, key)?;
        match self.meta.root {
            Some(root) => get_in(Nodes::new(&self.inner, self.meta.txid), root, &k),
            None => Ok(None),
        }
    }

    /// Rows of `table` from `start` to `end`, in key order.
    pub fn range(&self, table: u8, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Iter> {
        let lower = match start {
            Bound::Included(k) => Bound::Included(tree_key(table, k)?),
            Bound::Excluded(k) => Bound::Excluded(tree_key(table, k)?),
            Bound::Unbounded => Bound::Included(tree_key(table, &[])?),
        };
        let upper = match end {
            Bound::Included(k) => Bound::Included(tree_key(table, k)?),
            Bound::Excluded(k) => Bound::Excluded(tree_key(table, k)?),
            // Every key of the table is below the next table's empty key.
            Bound::Unbounded => Bound::Excluded(vec![table + 1]),
        };
        Iter::seek(self.pin.clone(), self.meta, lower, upper)
    }

    /// Every row of `table`, in key order.
    pub fn iter(&self, table: u8) -> Result<Iter> {
        self.range(table, Bound::Unbounded, Bound::Unbounded)
    }

    /// Rows in `table`.
    pub fn len(&self, table: u8) -> u64 {
        self.meta.rows.get(table as usize).copied().unwrap_or(0)
    }

    pub fn is_empty(&self, table: u8) -> bool {
        self.len(table) == 0
    }

    /// The commit this view shows.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }
}

/// Rows in key order, of the commit its [`ReadTx`] sees (it keeps that commit's pages
/// even after the transaction is dropped).
pub struct Iter {
    pin: Arc<Pin>,
    /// Nodes from the root down to the current leaf, with the index of the next entry.
    stack: Vec<(Arc<[u8]>, NodeRef, usize)>,
    upper: Bound<Vec<u8>>,
    done: bool,
}

impl Iter {
    fn seek(
        pin: Arc<Pin>,
        meta: Meta,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Result<Iter> {
        let mut it = Iter {
            pin,
            stack: Vec::new(),
            upper,
            done: meta.root.is_none(),
        };
        let Some(mut at) = meta.root else {
            return Ok(it);
        };
        let (key, skip_equal) = match &lower {
            Bound::Included(k) => (k.as_slice(), false),
            Bound::Excluded(k) => (k.as_slice(), true),
            Bound::Unbounded => (&[][..], false),
        };
        loop {
            let node = it.pin.nodes().get(at)?;
            let v = view(&node);
            if v.is_leaf() {
                let i = match v.search(key) {
                    Ok(i) if skip_equal => i + 1,
                    Ok(i) | Err(i) => i,
                };
                it.stack.push((node, at, i));
                return Ok(it);
            }
            let i = v.route(key);
            let child = v.child(i);
            it.stack.push((node, at, i + 1));
            at = child;
        }
    }

    fn advance(&mut self) -> Result<Option<Row>> {
        while !self.done {
            let Some((node, _, i)) = self.stack.last().cloned() else {
                self.done = true;
                break;
            };
            let v = view(&node);
            if i >= v.len() {
                self.stack.pop();
                continue;
            }
            if let Some(top) = self.stack.last_mut() {
                top.2 = i + 1;
            }
            if !v.is_leaf() {
                let child = v.child(i);
                let n = self.pin.nodes().get(child)?;
                self.stack.push((n, child, 0));
                continue;
            }
            let key = v.key(i);
            let past = match &self.upper {
                Bound::Included(u) => key > u.as_slice(),
                Bound::Excluded(u) => key >= u.as_slice(),
                Bound::Unbounded => false,
            };
            if past {
                self.done = true;
                break;
            }
            let (key, value) = (v.key_range(i), v.value_range(i));
            return Ok(Some(Row { node, key, value }));
        }
        Ok(None)
    }
}

impl Iterator for Iter {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        match self.advance() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
