//! HTTP basic auth against bcrypt hashes (`basic_auth_users`).
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so:
//! - hashes are checked on tokio's blocking pool, at most
//!   [`MAX_CONCURRENT_VERIFICATIONS`] at once, never on the executor that
//!   serves other connections;
//! - a successful (user, password) pair is remembered (as a SHA-256 digest,
//!   never in clear), so a scraper that authenticates every 15 s pays the
//!   cost once;
//! - an unknown user still costs one bcrypt verification, so response time
//!   does not tell which users exist.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use tokio::sync::Semaphore;

/// bcrypt verifications that may run at once.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Remembered successful logins; the memory is cleared when it is full.
const CACHE_CAP: usize = 256;

/// The users and the state of their verification.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// A real hash to verify against for unknown users.
    decoy: String,
    cache: Mutex<HashSet<[u8; 32]>>,
    verifying: Semaphore,
}

impl BasicAuth {
    /// Checks every hash; the error names the user whose hash is unusable.
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, (String, String)> {
        for (user, hash) in &users {
            if user.contains(':') {
                return Err((
                    user.clone(),
                    "a user name cannot contain ':' (basic auth separates it from the password with one)"
                        .into(),
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                (
                    user.clone(),
                    format!("not a bcrypt hash ({e}); create one with `htpasswd -nBC 10 USER`"),
                )
            })?;
        }
        let decoy = users.values().next().cloned().unwrap_or_default();
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            decoy,
            cache: Mutex::new(HashSet::new()),
            verifying: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        })
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether an `Authorization` header value grants access.
    pub async fn check(self: &Arc<Self>, header: Option<&[u8]>) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let key = digest(&user, &password);
        if self.remembered(&key) {
            return true;
        }
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let this = Arc::clone(self);
        let user_for_check = user.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let (known, hash) = match this.users.get(&user_for_check) {
                Some(h) => (true, h.as_str()),
                None => (false, this.decoy.as_str()),
            };
            let ok = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
            known && ok
        })
        .await
        .unwrap_or(false);
        if verified {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
            cache.insert(key);
        }
        verified
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }
}

/// SHA-256 of the user and password, the key of remembered logins.
fn digest(user: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(user.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `Basic base64(user:password)` -> (user, password).
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {enc}").into_bytes()
    }

    fn auth() -> Arc<BasicAuth> {
        let mut users = BTreeMap::new();
        users.insert("prom".to_string(), bcrypt::hash("s3cret", 4).unwrap());
        // What `htpasswd -nbBC 4 alice pw` writes: the $2y$ variant.
        let h = bcrypt::hash_with_result("pw", 4).unwrap();
        users.insert(
            "alice".to_string(),
            h.format_for_version(bcrypt::Version::TwoY),
        );
        Arc::new(BasicAuth::new(users).unwrap())
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            parse_basic(&header("u", "p:with:colons")),
            Some(("u".into(), "p:with:colons".into()))
        );
        assert_eq!(parse_basic(b"basic dTpw"), Some(("u".into(), "p".into())));
        assert_eq!(parse_basic(b"Bearer dTpw"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic dXNlcg=="), None, "no colon");
    }

    #[tokio::test]
    async fn only_the_right_password_of_a_known_user_passes() {
        let a = auth();
        assert!(a.check(Some(&header("prom", "s3cret"))).await);
        assert!(a.check(Some(&header("prom", "s3cret"))).await, "remembered");
        assert!(a.check(Some(&header("alice", "pw"))).await, "$2y$ hash");
        assert!(!a.check(Some(&header("prom", "wrong"))).await);
        assert!(!a.check(Some(&header("prom", "pw"))).await);
        assert!(!a.check(Some(&header("mallory", "s3cret"))).await);
        assert!(!a.check(None).await);
    }

    #[test]
    fn bad_hashes_and_user_names_are_rejected() {
        let mut users = BTreeMap::new();
        users.insert("bob".to_string(), "plaintext".to_string());
        let (user, msg) = BasicAuth::new(users).err().unwrap();
        assert_eq!(user, "bob");
        assert!(msg.contains("htpasswd"), "{msg}");
        let mut users = BTreeMap::new();
        users.insert("a:b".to_string(), bcrypt::hash("x", 4).unwrap());
        assert!(BasicAuth::new(users).is_err());
    }
}
