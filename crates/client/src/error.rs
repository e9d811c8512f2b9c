//! The client's errors: a server's etcd error recognised through `skiff-api`'s one
//! table ([`EtcdError`]), any other gRPC status kept whole, and the client's own
//! conditions (bad endpoints, timeouts with unknown outcome, watch compaction, a
//! lease that ended).
//!
//! Guarantees: an error the server sent with one of etcd's messages is always
//! [`Error::Etcd`] (callers match on the variant, not on strings); a request that timed
//! out is [`Error::Timeout`], whose outcome is unknown (etcd's rule), never reported as
//! a failure that did not happen.

use std::time::Duration;

use skiff_api::EtcdError;
use tonic::{Code, Status};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with one of etcd's client-visible errors.
    #[error("{0}")]
    Etcd(EtcdError),
    /// Any other gRPC status (transport failures, `Unimplemented` calls, ...). Displayed
    /// as Go's gRPC client does, which is what etcdctl prints.
    #[error("rpc error: code = {} desc = {}", code_name(.0.code()), .0.message())]
    Rpc(Status),
    /// An endpoint that cannot be dialled as written.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// What was given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// TLS options that cannot be used (unreadable PEM, a key that does not fit the
    /// certificate, no CA bundle).
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// The client was built without any endpoint.
    #[error("no endpoints given")]
    NoEndpoints,
    /// The request did not finish within its deadline. Its outcome is unknown: a write
    /// may or may not have been applied.
    #[error("context deadline exceeded")]
    Timeout(Duration),
    /// A watch could not continue because the revision it needed has been compacted.
    /// Events between the last delivered one and `compact_revision` are lost for this
    /// watch; it is never resumed silently past them.
    #[error("etcdserver: mvcc: required revision has been compacted (watch needs revision {wanted}, compacted up to {compact_revision})")]
    WatchCompacted {
        /// The revision the watch needed next.
        wanted: i64,
        /// The server's compaction revision: the oldest revision a new watch may start at.
        compact_revision: i64,
    },
    /// The server canceled a watch for a reason the client cannot recover from.
    #[error("watch canceled by the server: {0}")]
    WatchCanceled(String),
    /// A lease kept alive by [`crate::LeaseKeepAlive`] expired or was revoked.
    #[error("lease {0:016x} expired or revoked")]
    LeaseExpired(i64),
    /// A response missed a field the API always sets.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// Go's name of a gRPC code (`codes.Code.String()`), as etcdctl prints it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl Error {
    /// The error a gRPC status stands for: [`Error::Etcd`] when its message is one of
    /// etcd's (as etcd's Go client's `rpctypes` recognises them), else [`Error::Rpc`].
    /// Skiff's own "not implemented yet" answers stay [`Error::Rpc`] with code
    /// `Unimplemented`, as etcd's clients would see them.
    pub fn from_status(status: Status) -> Error {
        match EtcdError::from_status(&status) {
            Some(e) if status.code() != Code::Unimplemented => Error::Etcd(e),
            _ => Error::Rpc(status),
        }
    }

    /// The gRPC code this error carries, if it came from a status.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Etcd(e) => Some(e.code()),
            Error::Rpc(s) => Some(s.code()),
            Error::WatchCompacted { .. } => Some(Code::OutOfRange),
            Error::Timeout(_) => Some(Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether the server said the call is not built (`Unimplemented`).
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Some(Code::Unimplemented)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Error {
        Error::from_status(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_typed_errors() {
        let e = Error::from(EtcdError::Compacted.to_status());
        assert!(matches!(e, Error::Etcd(EtcdError::Compacted)));
        assert_eq!(
            e.to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        // Skiff's own "not built yet" answers are not etcd errors: shown as Go's client shows them.
        let e = Error::from(Status::unimplemented(
            "skiff: downgrade is not implemented yet",
        ));
        assert!(e.is_unimplemented());
        assert_eq!(
            e.to_string(),
            "rpc error: code = Unimplemented desc = skiff: downgrade is not implemented yet"
        );
        let e = Error::from(Status::unavailable("connection refused"));
        assert_eq!(
            e.to_string(),
            "rpc error: code = Unavailable desc = connection refused"
        );
    }
}
