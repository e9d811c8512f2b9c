//! Errors of the MVCC store. Request errors carry etcd's exact messages (clients match on
//! them) and say which gRPC code the server must use; [`Error::Backend`] is a storage
//! failure, after which the member must stop (its in-memory state may be ahead of disk).

use crate::backend::BackendError;

/// gRPC status codes the server maps request errors to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    FailedPrecondition,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The store failed an earlier write and refuses to go on (state may be ahead of disk).
    #[error("storage: store is poisoned by an earlier backend failure")]
    Poisoned,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Error {
    /// The gRPC code etcd answers this error with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::Compacted | Error::FutureRev => GrpcCode::OutOfRange,
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey => GrpcCode::InvalidArgument,
            Error::LeaseNotFound => GrpcCode::NotFound,
            Error::Poisoned | Error::Backend(_) => GrpcCode::Internal,
        }
    }

    /// True for errors about the request (deterministic on every member); false for
    /// storage failures.
    pub fn is_request_error(&self) -> bool {
        !matches!(self, Error::Poisoned | Error::Backend(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
