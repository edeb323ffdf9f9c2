//! Access control (I9): API keys compared in constant time, and WebSocket tokens signed with
//! HMAC-SHA256, scoped to one execution and expiring.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::{Arc, RwLock};

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credential, a wrong one, a forged or an expired token: 401.
    Unauthorized,
    /// A valid token for another execution: 403.
    Forbidden,
}

/// The API keys a deployment accepts. Clones share the set, so that a key rotation
/// ([`ApiKeys::replace`]) reaches every service holding one.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} key(s))", self.read().len())
    }
}

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> ApiKeys {
        ApiKeys {
            keys: Arc::new(RwLock::new(non_empty(keys))),
        }
    }

    /// Accepts exactly `keys` from now on (a rotation added or retired one).
    pub fn replace(&self, keys: Vec<String>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = non_empty(keys);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn check(&self, presented: Option<&str>) -> Result<(), Denied> {
        let Some(presented) = presented else {
            return Err(Denied::Unauthorized);
        };
        // Compare against every key without stopping early, so timing says nothing.
        let mut ok = false;
        for k in self.read().iter() {
            ok |= constant_time_eq(k.as_bytes(), presented.as_bytes());
        }
        if ok {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }
}

fn non_empty(keys: Vec<String>) -> Vec<String> {
    keys.into_iter().filter(|k| !k.is_empty()).collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Signs and checks WebSocket tokens: `base64url(execution_id "\n" expiry "\n" generation)
/// "." base64url(mac)`.
///
/// The generation is the token secret's: `deploy rotate-key --retire-old` (and
/// `--token-secret`) raises it, and a token minted under an older one is refused from then on,
/// so a token handed out under a retired key does not outlive the key by its hour. Tokens
/// without a generation are of generation 0. Like [`ApiKeys`], every clone shares one secret:
/// [`TokenSigner::replace`] reaches every service holding one.
#[derive(Clone)]
pub struct TokenSigner {
    inner: Arc<RwLock<SignerState>>,
    ttl_secs: i64,
}

struct SignerState {
    secret: Vec<u8>,
    generation: u64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenSigner(ttl {}s, generation {})",
            self.ttl_secs,
            self.generation()
        )
    }
}

impl TokenSigner {
    pub fn new(secret: impl Into<Vec<u8>>, ttl_secs: i64) -> TokenSigner {
        TokenSigner::with_generation(secret, 0, ttl_secs)
    }

    pub fn with_generation(
        secret: impl Into<Vec<u8>>,
        generation: u64,
        ttl_secs: i64,
    ) -> TokenSigner {
        TokenSigner {
            inner: Arc::new(RwLock::new(SignerState {
                secret: secret.into(),
                generation,
            })),
            ttl_secs,
        }
    }

    /// Signs and checks with `secret` at `generation` from now on (a rotation).
    pub fn replace(&self, secret: impl Into<Vec<u8>>, generation: u64) {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        s.secret = secret.into();
        s.generation = generation;
    }

    /// Takes `other`'s secret and generation (one read again from where secrets are kept).
    pub fn adopt(&self, other: &TokenSigner) {
        let (secret, generation) = {
            let o = other.inner.read().unwrap_or_else(|e| e.into_inner());
            (o.secret.clone(), o.generation)
        };
        self.replace(secret, generation);
    }

    pub fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&s.secret).expect("HMAC accepts keys of any length");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, execution_id: &str, now_secs: i64) -> String {
        let payload = format!(
            "{execution_id}\n{}\n{}",
            now_secs + self.ttl_secs,
            self.generation()
        );
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()))
        )
    }

    /// Checks a token for `execution_id` at `now_secs`; returns when it expires (Unix seconds).
    pub fn verify(&self, token: &str, execution_id: &str, now_secs: i64) -> Result<i64, Denied> {
        let (p, m) = token.split_once('.').ok_or(Denied::Unauthorized)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| Denied::Unauthorized)?;
        let mac = URL_SAFE_NO_PAD
            .decode(m)
            .map_err(|_| Denied::Unauthorized)?;
        if !constant_time_eq(&self.mac(&payload), &mac) {
            return Err(Denied::Unauthorized);
        }
        let payload = String::from_utf8(payload).map_err(|_| Denied::Unauthorized)?;
        let mut fields = payload.split('\n');
        let (exec, expiry) = (
            fields.next().ok_or(Denied::Unauthorized)?,
            fields.next().ok_or(Denied::Unauthorized)?,
        );
        let generation: u64 = match fields.next() {
            None => 0,
            Some(g) => g.parse().map_err(|_| Denied::Unauthorized)?,
        };
        let expiry: i64 = expiry.parse().map_err(|_| Denied::Unauthorized)?;
        if expiry < now_secs || generation < self.generation() {
            return Err(Denied::Unauthorized);
        }
        if exec != execution_id {
            return Err(Denied::Forbidden);
        }
        Ok(expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scoped_and_expire() {
        let s = TokenSigner::new(b"secret".to_vec(), 60);
        let t = s.sign("exec-1", 1_000);
        assert_eq!(s.verify(&t, "exec-1", 1_000), Ok(1_060));
        assert_eq!(s.verify(&t, "exec-2", 1_000), Err(Denied::Forbidden));
        assert_eq!(s.verify(&t, "exec-1", 1_061), Err(Denied::Unauthorized));
        let other = TokenSigner::new(b"other".to_vec(), 60);
        assert_eq!(other.verify(&t, "exec-1", 1_000), Err(Denied::Unauthorized));
        assert_eq!(
            s.verify("garbage", "exec-1", 1_000),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn a_token_of_an_older_generation_is_refused() {
        let s = TokenSigner::with_generation(b"secret".to_vec(), 3, 60);
        let t = s.sign("exec-1", 1_000);
        let held = s.clone();
        assert_eq!(held.verify(&t, "exec-1", 1_000), Ok(1_060));
        // A key was retired: generation 4 from now on, everywhere.
        s.replace(b"secret".to_vec(), 4);
        assert_eq!(held.verify(&t, "exec-1", 1_000), Err(Denied::Unauthorized));
        assert_eq!(
            held.verify(&held.sign("exec-1", 1_000), "exec-1", 1_000),
            Ok(1_060)
        );
        // A new secret: every earlier token is refused.
        let before = held.sign("exec-1", 1_000);
        s.replace(b"new secret".to_vec(), 4);
        assert_eq!(
            held.verify(&before, "exec-1", 1_000),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn api_keys_compare_whole_keys() {
        let keys = ApiKeys::new(vec!["abc".into(), String::new()]);
        assert_eq!(keys.check(Some("abc")), Ok(()));
        assert_eq!(keys.check(Some("ab")), Err(Denied::Unauthorized));
        assert_eq!(keys.check(Some("")), Err(Denied::Unauthorized));
        assert_eq!(keys.check(None), Err(Denied::Unauthorized));
        // A rotation reaches every clone: the new key is accepted, a retired one is not.
        let held_by_a_service = keys.clone();
        keys.replace(vec!["abc".into(), "new".into()]);
        assert_eq!(held_by_a_service.check(Some("new")), Ok(()));
        keys.replace(vec!["new".into()]);
        assert_eq!(
            held_by_a_service.check(Some("abc")),
            Err(Denied::Unauthorized)
        );
    }
}
