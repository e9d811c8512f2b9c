//! Errors of the MVCC store. A request the store refuses (bad request, compacted or
//! future revision, missing key or lease) is [`Error::Request`], carrying the
//! client-visible [`EtcdError`] (etcd's code and exact message, from `skiff-api`'s one
//! table); it is deterministic, so every member refuses the same entry the same way.
//! [`Error::Poisoned`] and [`Error::Backend`] are storage failures, after which the
//! member must stop (its in-memory state may be ahead of disk).

use skiff_api::EtcdError;

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is refused with this client-visible error.
    #[error(transparent)]
    Request(#[from] EtcdError),
    /// The store failed an earlier write and refuses to go on (state may be ahead of disk).
    #[error("storage: store is poisoned by an earlier backend failure")]
    Poisoned,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Error {
    /// The client-visible error, for errors about the request; `None` for storage
    /// failures.
    pub fn request_error(&self) -> Option<EtcdError> {
        match self {
            Error::Request(e) => Some(*e),
            Error::Poisoned | Error::Backend(_) => None,
        }
    }

    /// True for errors about the request (deterministic on every member); false for
    /// storage failures.
    pub fn is_request_error(&self) -> bool {
        self.request_error().is_some()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
