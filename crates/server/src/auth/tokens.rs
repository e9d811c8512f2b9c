//! etcd's `simple` auth tokens: random strings a member maps to a user name, kept only
//! in memory, valid for `--auth-token-ttl` after their last use (each use extends
//! them, as etcd's token keeper does), and dropped when their user's password changes,
//! the user is deleted, or auth is disabled.
//!
//! A token is made by the member that checked the password (its random part) and
//! assigned by every member when the `Authenticate` entry applies (the entry's index
//! appended: `<16 letters>.<index>`, etcd's format), so it is valid on every member.
//! The apply thread inserts and invalidates; requests look up. The map's lock is held
//! only for a map operation, never across I/O. Deadlines are member-local (they never
//! change replicated state), so reading the clock here is harmless.
//!
//! [`TokenProvider`] is what the member uses: these simple tokens, or etcd's `jwt`
//! tokens ([`super::jwt`]) when `--auth-token jwt,...` says so. Either way a token is
//! made when the `Authenticate` entry applies, on every member alike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use skiff_api::EtcdError;

use super::jwt::JwtTokens;

/// What a valid token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user: String,
    /// The auth store revision a `jwt` token was issued at (etcd checks key
    /// permissions only for tokens at least as new as the store); `None` for a simple
    /// token, which is as new as the store whenever it is valid.
    pub revision: Option<u64>,
}

/// The member's kind of token (`--auth-token`).
pub enum TokenProvider {
    Simple(SimpleTokens),
    Jwt(Box<JwtTokens>),
}

impl TokenProvider {
    /// Who a token names, if it is valid (a simple token's life is extended).
    pub fn info(&self, token: &str) -> Option<TokenInfo> {
        match self {
            TokenProvider::Simple(t) => t.user(token).map(|user| TokenInfo {
                user,
                revision: None,
            }),
            TokenProvider::Jwt(t) => match t.verify(token) {
                Ok(c) => Some(TokenInfo {
                    user: c.username,
                    revision: Some(c.revision),
                }),
                Err(why) => {
                    tracing::warn!(%why, "invalid JWT token");
                    None
                }
            },
        }
    }

    /// The token of an applied `Authenticate` entry: a simple token from the
    /// proposer's random part and the entry's index, or a JWT signed now for the auth
    /// store's `revision`.
    pub fn assign(
        &self,
        random: &str,
        index: u64,
        user: String,
        revision: u64,
    ) -> Result<String, EtcdError> {
        match self {
            TokenProvider::Simple(t) => {
                let token = format!("{random}.{index}");
                t.assign(token.clone(), user);
                Ok(token)
            }
            TokenProvider::Jwt(t) => t.sign(&user, revision),
        }
    }

    /// Drops every simple token of `user` (a JWT lives until its `exp`).
    pub fn invalidate_user(&self, user: &str) {
        if let TokenProvider::Simple(t) = self {
            t.invalidate_user(user);
        }
    }

    /// Drops every simple token.
    pub fn clear(&self) {
        if let TokenProvider::Simple(t) = self {
            t.clear();
        }
    }
}

/// The length of a token's random part (etcd's `defaultSimpleTokenLength`).
const TOKEN_LEN: usize = 16;

/// A fresh random token part: letters only, as etcd's.
pub fn random_token() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

struct Entry {
    user: String,
    deadline: Instant,
}

/// The simple tokens of one member.
pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Entry>>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens {
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves a consistent map (single operations).
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `token` valid for `user`; expired tokens are dropped meanwhile.
    pub fn assign(&self, token: String, user: String) {
        let now = Instant::now();
        let mut m = self.map();
        m.retain(|_, e| e.deadline > now);
        m.insert(
            token,
            Entry {
                user,
                deadline: now + self.ttl,
            },
        );
    }

    /// The user of a valid token, extending its life.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut m = self.map();
        let e = m.get_mut(token)?;
        if e.deadline <= now {
            m.remove(token);
            return None;
        }
        e.deadline = now + self.ttl;
        Some(e.user.clone())
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&self, user: &str) {
        self.map().retain(|_, e| e.user != user);
    }

    /// Drops every token.
    pub fn clear(&self) {
        self.map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_unless_used_and_are_invalidated() {
        let t = SimpleTokens::new(Duration::from_millis(300));
        let tok = format!("{}.5", random_token());
        assert_eq!(tok.len(), TOKEN_LEN + 2);
        t.assign(tok.clone(), "u".into());
        t.assign("other".into(), "v".into());
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(t.user(&tok).as_deref(), Some("u"), "use extends the token");
        }
        assert_eq!(t.user("other"), None, "unused past its TTL");
        t.invalidate_user("u");
        assert_eq!(t.user(&tok), None);
        t.assign("x".into(), "w".into());
        t.clear();
        assert_eq!(t.user("x"), None);
    }
}
