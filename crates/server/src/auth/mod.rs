//! Authentication and role-based access control, etcd 3.4's: the auth store
//! ([`store`]: users, roles, permissions, enabled flag and revision, applied from the
//! log and persisted in the backend), key-range permission checks ([`perms`]) and
//! tokens ([`tokens`]: etcd's simple ones, or `jwt` ones from [`jwt`]). The apply thread owns the store and publishes a
//! snapshot of it after each change ([`AuthShared`]); the request side reads that
//! snapshot: the facade's auth layer (`facade::auth`) checks every request against it
//! and the member's Auth service (`server::auth`) proposes changes.

pub mod jwt;
pub mod perms;
pub mod store;
pub mod tokens;

use std::sync::Arc;

use tokio::sync::watch;

pub use perms::Need;
pub use store::{AuthChange, AuthStore, ROOT_ROLE, ROOT_USER};
pub use tokens::{SimpleTokens, TokenInfo, TokenProvider};

/// What the apply thread and the request side share about auth: the published
/// store snapshot and the member's tokens.
#[derive(Clone)]
pub struct AuthShared {
    pub view: watch::Receiver<Arc<AuthStore>>,
    pub tokens: Arc<TokenProvider>,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}

impl AuthShared {
    /// The current snapshot of the store.
    pub fn now(&self) -> Arc<AuthStore> {
        self.view.borrow().clone()
    }
}
