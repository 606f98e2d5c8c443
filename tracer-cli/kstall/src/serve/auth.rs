//! Basic auth for the endpoint, from the web config file's basic_auth_users.
//!
//!
//! Basic auth and the CPU of the broker host: a bcrypt check costs ~50-100 ms of CPU at cost
//! 10, on purpose. A check that succeeded is remembered per user (a keyed HMAC of the password,
//! with a key drawn at start: not the password, and useless outside this process) and reused
//! until the user has not been seen for [`CACHE_IDLE`], so a Prometheus scraping every 15 s
//! pays for one bcrypt check, not one per scrape. Checks that need bcrypt (a new or wrong
//! password, an unknown user, which is checked against a dummy hash of the same cost so that
//! timing does not tell which users exist) run one at a time, off the async worker, and each
//! keeps the slot busy for [`PENALTY_FACTOR`] times its own duration after it: a storm of bad
//! credentials costs at most ~1/(1+PENALTY_FACTOR) = 20% of one core, whatever the bcrypt cost.
//! A request that cannot get the slot within [`SLOT_WAIT`] is answered 429, so a storm queues
//! no unbounded work; a scraper whose password is cached never waits for the slot.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use ring::{hmac, rand::SecureRandom};
use tokio::sync::Semaphore;

/// A cached successful check is forgotten after this long without a request by that user.
pub const CACHE_IDLE: Duration = Duration::from_secs(10 * 60);
/// After a bcrypt check the slot stays busy this many times the check's own duration.
pub const PENALTY_FACTOR: u32 = 4;
/// How long a request waits for the bcrypt slot before it is answered 429.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);

/// The outcome of a basic-auth check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No, malformed or wrong credentials: 401 with `WWW-Authenticate: Basic`.
    Denied,
    /// The bcrypt slot stayed busy (a storm of checks): 429.
    Busy,
}

/// Users and their bcrypt hashes, with the cache and the CPU budget described at the top.
pub struct BasicAuth {
    pub(super) users: HashMap<String, String>,
    /// Checked for unknown users, at the highest cost of the real ones: the same work.
    dummy_hash: String,
    cache_key: hmac::Key,
    /// user -> (HMAC of the password that passed bcrypt, last use).
    cache: Mutex<HashMap<String, (hmac::Tag, Instant)>>,
    slot: Arc<Semaphore>,
}

impl BasicAuth {
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        let mut max_cost = 4;
        for (user, hash) in &users {
            if user.contains(':') {
                bail!("basic_auth_users: user name {user:?} contains ':', which basic auth cannot send: rename it");
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                anyhow!("basic_auth_users: the password of {user:?} is not a bcrypt hash ({e}): hash it with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                bail!("basic_auth_users: the bcrypt cost of {user:?} is {cost}, outside 4-31: hash it again with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`");
            }
            max_cost = max_cost.max(cost);
        }
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(|_| anyhow!("the system's random number generator failed"))?;
        let dummy_hash = bcrypt::hash(secret, max_cost).context("cannot make the dummy bcrypt hash")?;
        rng.fill(&mut secret).map_err(|_| anyhow!("the system's random number generator failed"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            cache: Mutex::new(HashMap::new()),
            slot: Arc::new(Semaphore::new(1)),
        })
    }

    /// The check for one request, given its `Authorization` header.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else { return Verdict::Denied };
        if self.cached(&user, &password, Instant::now()) {
            return Verdict::Allowed;
        }
        let Ok(Ok(permit)) = tokio::time::timeout(SLOT_WAIT, self.slot.clone().acquire_owned()).await else {
            return Verdict::Busy;
        };
        let this = self.clone();
        let started = Instant::now();
        let allowed = tokio::task::spawn_blocking(move || this.verify(&user, &password)).await.unwrap_or(false);
        // The slot stays taken for a while after the check, in the background: the answer is
        // not delayed, the next bcrypt check is.
        let penalty = started.elapsed() * PENALTY_FACTOR;
        tokio::spawn(async move {
            tokio::time::sleep(penalty).await;
            drop(permit);
        });
        if allowed { Verdict::Allowed } else { Verdict::Denied }
    }

    /// True when this user's password passed bcrypt before and the user was seen within
    /// [`CACHE_IDLE`]; refreshes the entry. The HMAC comparison is constant-time.
    fn cached(&self, user: &str, password: &str, now: Instant) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let Some((tag, seen)) = cache.get_mut(user) else { return false };
        if now.duration_since(*seen) > CACHE_IDLE {
            cache.remove(user);
            return false;
        }
        if hmac::verify(&self.cache_key, password.as_bytes(), tag.as_ref()).is_err() {
            return false;
        }
        *seen = now;
        true
    }

    /// The bcrypt check (slow on purpose); remembers a success.
    fn verify(&self, user: &str, password: &str) -> bool {
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy_hash);
                false
            }
        };
        if ok {
            let tag = hmac::sign(&self.cache_key, password.as_bytes());
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(user.to_string(), (tag, Instant::now()));
        }
        ok
    }
}

/// `Basic base64(user:password)` -> (user, password); None for anything else.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// What the tests here and in the other modules of `serve` build on.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;


    /// "secret" at cost 4 (the minimum: fast tests) with htpasswd's `$2y$` prefix, made by glibc's
    /// crypt(3) (libxcrypt), not by the crate that checks it.
    pub(crate) const SECRET_2Y: &str = "$2y$04$x6bW4WQ3FVXN4ZC5b6WiIulrySdQLK.9KmfFl2hnjJa7mSOu/1nYe";

    pub(crate) fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    pub(crate) fn auth_of(users: &[(&str, &str)]) -> Arc<BasicAuth> {
        Arc::new(BasicAuth::new(users.iter().map(|(u, h)| (u.to_string(), h.to_string())).collect()).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testing::{SECRET_2Y, auth_of, basic},
        *,
    };

    #[test]
    fn basic_header_parsing() {
        assert_eq!(parse_basic(&basic("alice", "pa:ss wörd")), Some(("alice".into(), "pa:ss wörd".into())));
        assert_eq!(parse_basic(b"basic YWxpY2U6eA=="), Some(("alice".into(), "x".into())));
        for bad in [&b"Bearer abc"[..], b"Basic", b"Basic !!!", b"Basic YWxpY2U=", b"\xff\xfe"] {
            assert_eq!(parse_basic(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn auth_allows_only_the_right_password_and_caches_it() {
        let auth = auth_of(&[("prometheus", SECRET_2Y)]);
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("prometheus", "wrong"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("nobody", "secret"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(b"Basic cHJvbWV0aGV1cw==")).await, Verdict::Denied); // no ':'
        assert!(!auth.cached("prometheus", "secret", Instant::now()));
        assert_eq!(auth.check(Some(&basic("prometheus", "secret"))).await, Verdict::Allowed);
        // Now from the cache: no bcrypt, and only for the same password.
        assert!(auth.cached("prometheus", "secret", Instant::now()));
        assert!(!auth.cached("prometheus", "secret2", Instant::now()));
        assert!(!auth.cached("nobody", "secret", Instant::now()));
        assert_eq!(auth.check(Some(&basic("prometheus", "secret "))).await, Verdict::Denied);
        // Idle past CACHE_IDLE: forgotten, so bcrypt runs again.
        assert!(!auth.cached("prometheus", "secret", Instant::now() + CACHE_IDLE + Duration::from_secs(1)));
        assert!(!auth.cached("prometheus", "secret", Instant::now()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_storm_of_bad_passwords_is_paced() {
        // Cost 8: ~10-20 ms a check, long enough to measure the pacing.
        let hash = bcrypt::hash("secret", 8).unwrap();
        let auth = auth_of(&[("prometheus", &hash)]);
        let started = Instant::now();
        let storm: Vec<_> = (0..6)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.check(Some(&basic("prometheus", &format!("guess{i}")))).await })
            })
            .collect();
        let mut verdicts = Vec::new();
        for s in storm {
            verdicts.push(s.await.unwrap());
        }
        assert!(verdicts.iter().all(|v| *v == Verdict::Denied || *v == Verdict::Busy), "{verdicts:?}");
        let denied = verdicts.iter().filter(|v| **v == Verdict::Denied).count() as u32;
        // One check at a time, each followed by PENALTY_FACTOR times its duration: the checks
        // that ran took at least (denied - 1) * (1 + PENALTY_FACTOR) single checks of wall time.
        let one = {
            let t = Instant::now();
            let _ = bcrypt::verify("x", &hash);
            t.elapsed()
        };
        let elapsed = started.elapsed();
        assert!(elapsed * 2 >= one * (denied - 1) * (1 + PENALTY_FACTOR), "{denied} checks of {one:?} took only {elapsed:?}");
    }

}
