//! Authentication: a user name and password exchanged for a token (etcd's
//! `Authenticate`), the token sent with every call as the `token` gRPC metadata (as
//! etcd's clients send it), and its renewal when a server no longer accepts it.
//!
//! Guarantees:
//! - Without [`Credentials`] (or with an empty user name or password, as etcd's client
//!   treats them) no token is ever requested or sent.
//! - The first call of a client with credentials authenticates first (or
//!   [`crate::Client::authenticate`] does it up front). A server with authentication
//!   disabled answers `authentication is not enabled`: the client then goes on without
//!   a token, as etcd's client does, and does not ask again.
//! - A unary call answered `etcdserver: invalid auth token` (the token expired or the
//!   member restarted and forgot it) or `etcdserver: revision of auth store is old`
//!   (a `jwt` token issued before the last change of users or roles, or a request
//!   checked just before one; etcd's client renews on both) re-authenticates **once**
//!   and repeats the call once. That repeat is safe even for a write: the server
//!   refuses either before applying anything (the old revision at the latest when the
//!   entry applies, which then changes nothing), so a refused call was not applied. Concurrent calls
//!   that fail with the same old token share one re-authentication.
//! - `Authenticate` itself is sent without a token, and the password is never logged
//!   or shown by `Debug`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::auth_client::AuthClient;
use skiff_proto::etcdserverpb::AuthenticateRequest;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::Error;
use crate::pool::{Pool, Safety};

/// A user name and password for etcd's authentication (etcdctl `--user`, `--password`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// Credentials of `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Whether these are used at all: etcd's client authenticates only when both the
    /// user name and the password are non-empty.
    pub fn usable(&self) -> bool {
        !self.user.is_empty() && !self.password.is_empty()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where authentication stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not asked yet.
    Unknown,
    /// The server does not have authentication enabled: no token.
    NotEnabled,
    /// The current token.
    Token(String),
}

/// The client's token, shared by every channel of the client.
pub(crate) struct TokenState {
    credentials: Option<Credentials>,
    /// The state and a generation that counts renewals.
    state: RwLock<(State, u64)>,
    /// Serialises (re-)authentication.
    renewing: tokio::sync::Mutex<()>,
    /// Tokens obtained so far.
    obtained: AtomicU64,
}

impl TokenState {
    pub(crate) fn new(credentials: Option<Credentials>) -> TokenState {
        TokenState {
            credentials: credentials.filter(Credentials::usable),
            state: RwLock::new((State::Unknown, 0)),
            renewing: tokio::sync::Mutex::new(()),
            obtained: AtomicU64::new(0),
        }
    }

    fn read(&self) -> (State, u64) {
        self.state
            .read()
            .expect("token lock is never poisoned: no code panics holding it")
            .clone()
    }

    fn write(&self, s: State) {
        let mut g = self
            .state
            .write()
            .expect("token lock is never poisoned: no code panics holding it");
        g.0 = s;
        g.1 += 1;
    }

    /// The token to send, if any.
    pub(crate) fn token(&self) -> Option<String> {
        match self.read().0 {
            State::Token(t) => Some(t),
            _ => None,
        }
    }

    /// The renewal generation now (compare before and after a failed call).
    pub(crate) fn generation(&self) -> u64 {
        self.read().1
    }

    /// How many tokens the client has obtained.
    pub(crate) fn obtained(&self) -> u64 {
        self.obtained.load(Ordering::Relaxed)
    }

    /// Whether the client authenticates at all.
    pub(crate) fn enabled(&self) -> bool {
        self.credentials.is_some()
    }
}

/// Adds the `token` metadata to every request of a channel (unless anonymous).
#[derive(Clone)]
pub(crate) struct TokenInterceptor {
    state: Arc<TokenState>,
    send: bool,
}

impl TokenInterceptor {
    /// Sends the client's current token.
    pub(crate) fn new(state: Arc<TokenState>) -> TokenInterceptor {
        TokenInterceptor { state, send: true }
    }

    /// Sends no token (for `Authenticate`).
    pub(crate) fn anonymous(state: Arc<TokenState>) -> TokenInterceptor {
        TokenInterceptor { state, send: false }
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.send {
            return Ok(req);
        }
        if let Some(t) = self.state.token() {
            if let Ok(v) = MetadataValue::try_from(t.as_str()) {
                req.metadata_mut().insert("token", v);
            }
        }
        Ok(req)
    }
}

/// A member's channel that carries the client's token.
pub(crate) type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

impl Pool {
    /// Authenticates if the client has credentials and has not yet (see the module
    /// docs).
    pub(crate) async fn ensure_token(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), Error> {
        if !self.auth.enabled() || self.auth.read().0 != State::Unknown {
            return Ok(());
        }
        let gen = self.auth.generation();
        self.renew(gen, deadline).await
    }

    /// Asks for a new token unless one newer than generation `seen` exists already.
    pub(crate) async fn renew(
        &self,
        seen: u64,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), Error> {
        let Some(creds) = self.auth.credentials.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.auth.renewing.lock().await;
        if self.auth.generation() != seen {
            return Ok(());
        }
        let req = AuthenticateRequest {
            name: creds.user,
            password: creds.password,
        };
        let answer = self
            .unary_on(Safety::Idempotent, deadline, None, true, |ch| {
                let req = req.clone();
                async move { AuthClient::new(ch).authenticate(req).await }
            })
            .await;
        match answer {
            Ok(resp) => {
                tracing::debug!("authenticated");
                self.auth.write(State::Token(resp.token));
                self.auth.obtained.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Error::Etcd(EtcdError::AuthNotEnabled)) => {
                self.auth.write(State::NotEnabled);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `e` says the token was refused (or is older than the auth store).
pub(crate) fn token_refused(e: &Error) -> bool {
    matches!(
        e,
        Error::Etcd(EtcdError::InvalidAuthToken | EtcdError::AuthOldRevision)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_user_or_password_means_no_authentication() {
        assert!(!TokenState::new(Some(Credentials::new("root", ""))).enabled());
        assert!(!TokenState::new(Some(Credentials::new("", "pw"))).enabled());
        assert!(!TokenState::new(None).enabled());
        assert!(TokenState::new(Some(Credentials::new("root", "pw"))).enabled());
    }

    #[test]
    fn the_password_is_not_shown() {
        let s = format!("{:?}", Credentials::new("root", "secret"));
        assert!(s.contains("root") && !s.contains("secret"), "{s}");
    }

    #[test]
    fn the_token_goes_into_the_metadata() {
        use tonic::service::Interceptor;
        let state = Arc::new(TokenState::new(Some(Credentials::new("u", "p"))));
        let mut i = TokenInterceptor::new(state.clone());
        let mut anon = TokenInterceptor::anonymous(state.clone());
        let r = i.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("token").is_none());
        state.write(State::Token("abc.1".into()));
        let r = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("token").unwrap(), "abc.1");
        assert_eq!(state.generation(), 1);
        let r = anon.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("token").is_none());
    }
}
