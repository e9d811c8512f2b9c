//! Transactions on the backend's page store, by [`Table`].
//!
//! A thin layer over `skiff_pages`: a [`ReadTx`] is a consistent view of one commit; a
//! [`WriteTx`] is the one writer, committed through [`super::Backend::commit`] (which
//! decides whether the commit is durable). Tables are opened from a transaction as
//! handles ([`TableRead`], [`TableWrite`]); several handles of one write transaction may
//! be open at once (an apply writes the `key` and `meta` tables together).

use std::cell::RefCell;
use std::ops::{Bound, RangeBounds};

use skiff_pages::Row;

use super::{BResult, Table};

/// A value read from a table.
pub enum Value {
    /// Shares the node it was read from.
    Stored(Row),
    /// Copied out of a write transaction's own changes.
    Owned(Vec<u8>),
}

impl Value {
    pub fn value(&self) -> &[u8] {
        match self {
            Value::Stored(r) => r.value(),
            Value::Owned(v) => v,
        }
    }
}

/// A row's key as iteration yields it (with [`Value`], as `(key, value)`).
pub struct Key(Row);

impl Key {
    pub fn value(&self) -> &[u8] {
        self.0.key()
    }
}

/// Tables that can be read by key.
pub trait ReadableTable {
    fn get(&self, key: &[u8]) -> BResult<Option<Value>>;
}

/// A consistent view of the backend as of the last commit before it began.
pub struct ReadTx(pub(super) skiff_pages::ReadTx);

impl ReadTx {
    pub fn open_table(&self, table: Table) -> BResult<TableRead<'_>> {
        Ok(TableRead {
            tx: &self.0,
            id: table.id(),
        })
    }
}

/// One table of a [`ReadTx`].
pub struct TableRead<'a> {
    tx: &'a skiff_pages::ReadTx,
    id: u8,
}

impl TableRead<'_> {
    /// Every row, in key order.
    pub fn iter(&self) -> BResult<Rows> {
        Ok(Rows(self.tx.iter(self.id)?))
    }

    /// The rows with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> BResult<Rows> {
        Ok(Rows(self.tx.range(
            self.id,
            as_bytes(range.start_bound()),
            as_bytes(range.end_bound()),
        )?))
    }

    pub fn len(&self) -> BResult<u64> {
        Ok(self.tx.len(self.id))
    }

    pub fn is_empty(&self) -> BResult<bool> {
        Ok(self.tx.len(self.id) == 0)
    }
}

impl ReadableTable for TableRead<'_> {
    fn get(&self, key: &[u8]) -> BResult<Option<Value>> {
        Ok(self.tx.get(self.id, key)?.map(Value::Stored))
    }
}

fn as_bytes<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Rows in key order, as `(key, value)`.
pub struct Rows(skiff_pages::Iter);

impl Iterator for Rows {
    type Item = BResult<(Key, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(
            self.0
                .next()?
                .map(|row| (Key(row.clone()), Value::Stored(row)))
                .map_err(Into::into),
        )
    }
}

/// The backend's write transaction (see [`super::Backend::begin_write`]); dropped
/// without a commit, it changes nothing.
pub struct WriteTx(RefCell<skiff_pages::WriteTx>);

impl WriteTx {
    pub(super) fn new(tx: skiff_pages::WriteTx) -> WriteTx {
        WriteTx(RefCell::new(tx))
    }

    pub fn open_table(&self, table: Table) -> BResult<TableWrite<'_>> {
        Ok(TableWrite {
            tx: &self.0,
            id: table.id(),
        })
    }

    /// Removes every row of `table`.
    pub fn delete_table(&self, table: Table) -> BResult<()> {
        self.0.borrow_mut().clear(table.id())?;
        Ok(())
    }

    /// Removes every row of every table (without reading them).
    pub fn clear_all(&self) -> BResult<()> {
        Ok(self.0.borrow_mut().clear_all()?)
    }

    /// Writes what the transaction changed so far to free pages (a bulk load's memory
    /// stays bounded); nothing is published until the commit.
    pub fn flush(&self) -> BResult<()> {
        Ok(self.0.borrow_mut().flush()?)
    }

    /// Drops the transaction, changing nothing.
    pub fn abort(self) -> BResult<()> {
        Ok(())
    }

    pub(super) fn into_inner(self) -> skiff_pages::WriteTx {
        self.0.into_inner()
    }
}

/// One table of a [`WriteTx`].
pub struct TableWrite<'a> {
    tx: &'a RefCell<skiff_pages::WriteTx>,
    id: u8,
}

impl TableWrite<'_> {
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> BResult<()> {
        self.tx.borrow_mut().insert(self.id, key, value)?;
        Ok(())
    }

    /// Removes the row; whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> BResult<bool> {
        Ok(self.tx.borrow_mut().remove(self.id, key)?)
    }

    pub fn len(&self) -> BResult<u64> {
        Ok(self.tx.borrow().len(self.id))
    }

    pub fn is_empty(&self) -> BResult<bool> {
        Ok(self.tx.borrow().len(self.id) == 0)
    }
}

impl ReadableTable for TableWrite<'_> {
    fn get(&self, key: &[u8]) -> BResult<Option<Value>> {
        Ok(self.tx.borrow().get(self.id, key)?.map(Value::Owned))
    }
}
