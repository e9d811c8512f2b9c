//! The errors a client can see, with etcd's exact gRPC codes and messages: Skiff's one
//! table of them (the server answers with it, the storage reports request errors with
//! it, a client recognises them with [`EtcdError::from_status`]).
//!
//! Clients (etcdctl, the Go client's `rpctypes`, Kubernetes) match on these strings,
//! so every variant's text and code is etcd's, byte for byte, and no two variants
//! share a message. A variant converts to a [`tonic::Status`] with
//! [`EtcdError::to_status`] (or `From`).

use tonic::{Code, Status};

/// Declares [`EtcdError`] from `Variant => "message"` rows, with [`EtcdError::ALL`].
macro_rules! etcd_errors {
    ($($name:ident => $msg:literal,)*) => {
        /// A client-visible etcd error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
        pub enum EtcdError {
            $(
                #[error($msg)]
                $name,
            )*
        }

        impl EtcdError {
            /// Every variant, in table order.
            pub const ALL: &'static [EtcdError] = &[$(EtcdError::$name),*];

            /// etcd's message for this error (what `Display` prints).
            pub fn message(self) -> &'static str {
                match self {
                    $(EtcdError::$name => $msg,)*
                }
            }
        }
    };
}

etcd_errors! {
    EmptyKey => "etcdserver: key is not provided",
    KeyNotFound => "etcdserver: key not found",
    ValueProvided => "etcdserver: value is provided",
    LeaseProvided => "etcdserver: lease is provided",
    TooManyOps => "etcdserver: too many operations in txn request",
    DuplicateKey => "etcdserver: duplicate key given in txn request",
    InvalidSortOption => "etcdserver: invalid sort option",
    Compacted => "etcdserver: mvcc: required revision has been compacted",
    FutureRev => "etcdserver: mvcc: required revision is a future revision",
    NoSpace => "etcdserver: mvcc: database space exceeded",
    LeaseNotFound => "etcdserver: requested lease not found",
    LeaseExist => "etcdserver: lease already exists",
    LeaseTtlTooLarge => "etcdserver: too large lease TTL",
    MemberExist => "etcdserver: member ID already exist",
    PeerUrlExist => "etcdserver: Peer URLs already exists",
    MemberNotEnoughStarted => "etcdserver: re-configuration failed due to not enough started members",
    MemberBadUrls => "etcdserver: given member URLs are invalid",
    MemberNotFound => "etcdserver: member not found",
    MemberNotLearner => "etcdserver: can only promote a learner member",
    LearnerNotReady => "etcdserver: can only promote a learner member which is in sync with leader",
    TooManyLearners => "etcdserver: too many learner members in cluster",
    RequestTooLarge => "etcdserver: request is too large",
    TooManyRequests => "etcdserver: too many requests",
    RootUserNotExist => "etcdserver: root user does not exist",
    RootRoleNotExist => "etcdserver: root user does not have root role",
    UserAlreadyExist => "etcdserver: user name already exists",
    UserEmpty => "etcdserver: user name is empty",
    UserNotFound => "etcdserver: user name not found",
    RoleAlreadyExist => "etcdserver: role name already exists",
    RoleNotFound => "etcdserver: role name not found",
    RoleEmpty => "etcdserver: role name is empty",
    AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
    PermissionDenied => "etcdserver: permission denied",
    RoleNotGranted => "etcdserver: role is not granted to the user",
    PermissionNotGranted => "etcdserver: permission is not granted to the role",
    AuthNotEnabled => "etcdserver: authentication is not enabled",
    InvalidAuthToken => "etcdserver: invalid auth token",
    InvalidAuthMgmt => "etcdserver: invalid auth management",
    AuthOldRevision => "etcdserver: revision of auth store is old",
    // etcd 3.4's auth package errors, which some calls return unmapped (gRPC code
    // Unknown): the Maintenance calls' auth checks, and `Authenticate` for a user
    // created with `--no-password`.
    AuthPkgInvalidToken => "auth: invalid auth token",
    AuthPkgUserEmpty => "auth: user name is empty",
    AuthPkgUserNotFound => "auth: user not found",
    AuthPkgPermissionDenied => "auth: permission denied",
    AuthPkgNoPasswordUser => "auth: authentication failed, password was given for no password user",
    // `Authenticate` on a member whose `--auth-token jwt` has only a public key.
    AuthPkgVerifyOnly => "auth: token signing attempted with verify-only key",
    NoLeader => "etcdserver: no leader",
    NotLeader => "etcdserver: not leader",
    LeaderChanged => "etcdserver: leader changed",
    NotCapable => "etcdserver: not capable",
    Stopped => "etcdserver: server stopped",
    Timeout => "etcdserver: request timed out",
    TimeoutDueToLeaderFail => "etcdserver: request timed out, possibly due to previous leader failure",
    TimeoutDueToConnectionLost => "etcdserver: request timed out, possibly due to connection lost",
    Unhealthy => "etcdserver: unhealthy cluster",
    Corrupt => "etcdserver: corrupt cluster",
    NotSupportedForLearner => "etcdserver: rpc not supported for learner",
    BadLeaderTransferee => "etcdserver: bad leader transferee",
    TimeoutLeaderTransfer => "etcdserver: request timed out, leader transfer took too long",
    // Skiff's own: calls of etcd's API that Skiff does not implement yet. They answer
    // `Unimplemented` naming the call, never a silent success or an empty message.
    UnsupportedSnapshot => "skiff: snapshot is not implemented yet",
    UnsupportedDowngrade => "skiff: downgrade is not implemented yet",
    // Skiff's own: a response larger than the whole in-flight response budget
    // (`--max-inflight-response-bytes`), which could never be served; the client
    // should page with `limit`. Code ResourceExhausted, as etcd's `too many requests`.
    ResponseTooLarge => "skiff: response is larger than --max-inflight-response-bytes; use a limit",
    // Skiff's own: client sessions (exactly-once writes; the server's `session` module).
    SessionNotFound => "skiff: session not found (expired or closed)",
    SessionSeqAcknowledged => "skiff: session sequence already acknowledged",
    SessionWindowFull => "skiff: too many unacknowledged requests in session",
    SessionBadMetadata => "skiff: bad session metadata",
}

impl EtcdError {
    /// The gRPC status code etcd sends with this error.
    pub fn code(self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | MemberBadUrls | RequestTooLarge | UserEmpty | RoleEmpty
            | AuthFailed | InvalidAuthMgmt | AuthOldRevision | SessionBadMetadata => {
                Code::InvalidArgument
            }
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests | ResponseTooLarge | SessionWindowFull => {
                Code::ResourceExhausted
            }
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | RootUserNotExist
            | RootRoleNotExist
            | UserAlreadyExist
            | UserNotFound
            | RoleAlreadyExist
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled
            | NotLeader
            | BadLeaderTransferee
            | SessionNotFound
            | SessionSeqAcknowledged => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoLeader
            | LeaderChanged
            | NotCapable
            | Stopped
            | Timeout
            | TimeoutDueToLeaderFail
            | TimeoutDueToConnectionLost
            | Unhealthy
            | NotSupportedForLearner
            | TimeoutLeaderTransfer => Code::Unavailable,
            Corrupt => Code::DataLoss,
            AuthPkgInvalidToken
            | AuthPkgUserEmpty
            | AuthPkgUserNotFound
            | AuthPkgPermissionDenied
            | AuthPkgNoPasswordUser
            | AuthPkgVerifyOnly => Code::Unknown,
            UnsupportedSnapshot | UnsupportedDowngrade => Code::Unimplemented,
        }
    }

    /// The gRPC status a client receives.
    pub fn to_status(self) -> Status {
        Status::new(self.code(), self.message())
    }

    /// The error a status carries, recognised by its message as etcd's clients do
    /// (the Go client's `rpctypes.Error`); `None` for any other status.
    pub fn from_status(status: &Status) -> Option<EtcdError> {
        Self::from_message(status.message())
    }

    /// The error whose message is exactly `msg`, among those etcd's Go client
    /// recognises ([`EtcdError::client_recognised`]).
    pub fn from_message(msg: &str) -> Option<EtcdError> {
        Self::ALL
            .iter()
            .copied()
            .filter(|e| e.client_recognised())
            .find(|e| e.message() == msg)
    }

    /// Whether etcd's Go client (`rpctypes`) turns this error's status into its own
    /// error value. The auth package's errors (`AuthPkg*`) it does not: a client
    /// shows them as the raw gRPC status (etcdctl: `rpc error: code = Unknown desc =
    /// auth: ...`), so Skiff's client must not recognise them either.
    pub fn client_recognised(self) -> bool {
        !matches!(
            self,
            EtcdError::AuthPkgInvalidToken
                | EtcdError::AuthPkgUserEmpty
                | EtcdError::AuthPkgUserNotFound
                | EtcdError::AuthPkgPermissionDenied
                | EtcdError::AuthPkgNoPasswordUser
                | EtcdError::AuthPkgVerifyOnly
        )
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_etcds() {
        let cases = [
            (
                EtcdError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                EtcdError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                EtcdError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                EtcdError::NotLeader,
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                EtcdError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                EtcdError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                EtcdError::AuthPkgInvalidToken,
                Code::Unknown,
                "auth: invalid auth token",
            ),
            (
                EtcdError::AuthPkgNoPasswordUser,
                Code::Unknown,
                "auth: authentication failed, password was given for no password user",
            ),
        ];
        for (err, code, msg) in cases {
            let status = err.to_status();
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), msg);
        }
    }

    #[test]
    fn from_status_recognises_every_error() {
        let mut seen = std::collections::HashSet::new();
        for &e in EtcdError::ALL {
            assert!(seen.insert(e.message()), "{e:?}: message shared");
            assert_eq!(e.to_string(), e.message());
            let recognised = e.client_recognised().then_some(e);
            assert_eq!(EtcdError::from_status(&e.to_status()), recognised);
        }
        assert_eq!(EtcdError::ALL.len(), 65);
        assert_eq!(
            EtcdError::from_status(&Status::unknown("auth: permission denied")),
            None,
            "the Go client shows the auth package's errors as raw statuses"
        );
        assert_eq!(
            EtcdError::from_status(&Status::unavailable("etcdserver: no leader")),
            Some(EtcdError::NoLeader)
        );
        assert_eq!(
            EtcdError::from_status(&Status::internal("etcdserver: something else")),
            None
        );
    }
}
