//! A job's input files: fetched from the broker's blob store by sha256, or
//! from an http(s) URL this provider's policy allows
//! ([`ProviderConfig::data_urls`](crate::ProviderConfig::data_urls)),
//! checked against the sha256, and cached on disk as fetched (encrypted,
//! if the job gave a key) with a TTL and a size cap (least recently used
//! first out). A TTL of 0 means "don't keep it", as in the CGN seed. A
//! key decrypts the file (AES-256-GCM, `nonce ‖ ciphertext ‖ tag`) only
//! into the job's work dir.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, KeyInit};
use brume_api::data::Input;
use brume_api::wire::Assign;
use bytes::Bytes;
use sha2::Digest as _;

use crate::Shared;
use crate::work::SessionCtx;

/// The on-disk cache of fetched input files, by sha256.
#[derive(Debug)]
pub struct DataCache {
    dir: PathBuf,
    max_bytes: u64,
    default_ttl: Duration,
    index: parking_lot::Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    /// Bumped on every use: the least recent goes first.
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    expires: SystemTime,
    used: u64,
}

impl DataCache {
    /// Opens the cache in `dir`, keeping what is there (each file expires
    /// `default_ttl` after it was written).
    pub fn open(dir: PathBuf, max_bytes: u64, default_ttl: Duration) -> std::io::Result<DataCache> {
        std::fs::create_dir_all(&dir)?;
        let mut index = Index::default();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if name.len() != 64 || !m.is_file() {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let written = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            index.total += m.len();
            index.entries.insert(
                name,
                Entry {
                    size: m.len(),
                    expires: written + default_ttl,
                    used: 0,
                },
            );
        }
        Ok(DataCache {
            dir,
            max_bytes,
            default_ttl,
            index: parking_lot::Mutex::new(index),
        })
    }

    /// The cached bytes of `sha256`, unless expired at `now`. Blocking.
    pub fn get(&self, sha256: &str, now: SystemTime) -> Option<Bytes> {
        self.expire(now);
        {
            let mut index = self.index.lock();
            index.clock += 1;
            let clock = index.clock;
            index.entries.get_mut(sha256)?.used = clock;
        }
        std::fs::read(self.dir.join(sha256)).ok().map(Bytes::from)
    }

    /// Keeps `bytes` (whose sha256 was checked) for `ttl` (default: the
    /// cache's; 0: not at all), making room by dropping the least recently
    /// used. Blocking.
    pub fn put(&self, sha256: &str, bytes: &[u8], ttl: Option<Duration>, now: SystemTime) {
        let ttl = ttl.unwrap_or(self.default_ttl);
        let size = bytes.len() as u64;
        if ttl.is_zero() || size > self.max_bytes {
            return;
        }
        self.expire(now);
        let mut index = self.index.lock();
        while index.total + size > self.max_bytes {
            let Some(oldest) = index
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&mut index, &oldest);
        }
        if std::fs::write(self.dir.join(sha256), bytes).is_err() {
            return;
        }
        index.clock += 1;
        let used = index.clock;
        if let Some(old) = index.entries.insert(
            sha256.to_owned(),
            Entry {
                size,
                expires: now + ttl,
                used,
            },
        ) {
            index.total -= old.size;
        }
        index.total += size;
    }

    /// Drops every file expired at `now`.
    pub fn expire(&self, now: SystemTime) {
        let mut index = self.index.lock();
        let expired: Vec<String> = index
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&mut index, &k);
        }
    }

    fn remove(&self, index: &mut Index, sha256: &str) {
        if let Some(e) = index.entries.remove(sha256) {
            index.total -= e.size;
            let _ = std::fs::remove_file(self.dir.join(sha256));
        }
    }

    /// Files and bytes held.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.index.lock();
        (index.entries.len(), index.total)
    }
}

/// Why a job's inputs could not be had.
#[derive(Debug)]
pub(crate) enum InputError {
    /// Not this provider's to fetch (a URL its policy doesn't allow): the
    /// broker offers the work elsewhere.
    Refused(String),
    /// The job's own fault: `(code, message)`.
    Failed(&'static str, String),
}

/// Fetches, checks and (with a key) decrypts the assignment's inputs,
/// within its input budget (what stdin leaves of `max_input_bytes`).
pub(crate) async fn inputs(
    shared: &Arc<Shared>,
    ctx: &SessionCtx,
    a: &Assign,
) -> Result<Vec<(String, Bytes)>, InputError> {
    let mut left = a
        .limits
        .max_input_bytes
        .saturating_sub(a.stdin.len() as u64);
    let mut out = Vec::with_capacity(a.inputs.len());
    for input in &a.inputs {
        let bytes = fetched(shared, ctx, input, left).await?;
        left -= bytes.len() as u64;
        let plain = match &input.key {
            None => bytes,
            Some(key) => decrypt(key, &bytes).ok_or_else(|| {
                InputError::Failed("invalid_input", format!("input {}: the key does not decrypt it (AES-256-GCM, nonce ‖ ciphertext ‖ tag)", input.path))
            })?,
        };
        out.push((input.path.clone(), plain));
    }
    Ok(out)
}

fn decrypt(key: &[u8], sealed: &[u8]) -> Option<Bytes> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).ok()?;
    let (nonce, ciphertext) = sealed.split_at(12);
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    cipher.decrypt(nonce, ciphertext).ok().map(Bytes::from)
}

/// One input's bytes as fetched (checked), from the cache or its source.
async fn fetched(
    shared: &Arc<Shared>,
    ctx: &SessionCtx,
    input: &Input,
    left: u64,
) -> Result<Bytes, InputError> {
    let cache = shared.data.clone();
    let sha = input.sha256.clone();
    let hit = tokio::task::spawn_blocking(move || cache.get(&sha, SystemTime::now()))
        .await
        .ok()
        .flatten();
    if let Some(b) = hit {
        return within(input, b, left);
    }
    let bytes = match &input.url {
        None => {
            let digest = input.sha256.parse().map_err(|e| {
                InputError::Failed("invalid_input", format!("input {}: {e}", input.path))
            })?;
            crate::work::fetch(shared, ctx, &digest)
                .await
                .map_err(|e| {
                    InputError::Failed(
                        "invalid_input",
                        format!(
                            "input {}: sha256 {} is not in the broker's blob store ({e:?})",
                            input.path, input.sha256
                        ),
                    )
                })?
        }
        Some(url) => {
            if !shared
                .config
                .data_urls
                .iter()
                .any(|p| url.starts_with(p.as_str()))
            {
                return Err(InputError::Refused(format!(
                    "input {}: this provider fetches no data from {url}",
                    input.path
                )));
            }
            from_url(shared, url, left, None).await.map_err(|e| {
                InputError::Failed(
                    "invalid_input",
                    format!("input {}: GET {url}: {e}", input.path),
                )
            })?
        }
    };
    let got = hex::encode(sha2::Sha256::digest(&bytes));
    if got != input.sha256 {
        return Err(InputError::Failed(
            "invalid_input",
            format!(
                "input {}: fetched bytes have sha256 {got}, not {}",
                input.path, input.sha256
            ),
        ));
    }
    let bytes = within(input, bytes, left)?;
    let (cache, sha, b, ttl) = (
        shared.data.clone(),
        input.sha256.clone(),
        bytes.clone(),
        input.ttl_s.map(Duration::from_secs),
    );
    let _ = tokio::task::spawn_blocking(move || cache.put(&sha, &b, ttl, SystemTime::now())).await;
    Ok(bytes)
}

fn within(input: &Input, bytes: Bytes, left: u64) -> Result<Bytes, InputError> {
    if bytes.len() as u64 > left {
        return Err(InputError::Failed(
            "input_too_large",
            format!(
                "input {}: {} bytes is over what is left of the job's max_input_bytes ({left})",
                input.path,
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Why a GET failed: the server's error status, if it answered one.
#[derive(Debug)]
pub(crate) struct GetError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// GETs `url` (asking for `accept` types, if given), reading at most
/// `limit` bytes.
pub(crate) async fn from_url(
    shared: &Shared,
    url: &str,
    limit: u64,
    accept: Option<&str>,
) -> Result<Bytes, GetError> {
    let err = |message: String| GetError {
        status: None,
        message,
    };
    let mut req = shared.lists_http.get(url).timeout(Duration::from_secs(120));
    if let Some(types) = accept {
        req = req.header(reqwest::header::ACCEPT, types);
    }
    let mut resp = req.send().await.map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(GetError {
            status: Some(resp.status().as_u16()),
            message: resp.status().to_string(),
        });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > limit {
            return Err(err(format!("over {limit} bytes")));
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_expires_by_ttl_keeps_nothing_at_ttl_zero_and_drops_the_least_recent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache =
            DataCache::open(dir.path().join("data"), 10, Duration::from_secs(60)).expect("open");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        cache.put("a", b"aaaa", Some(Duration::from_secs(5)), t0);
        cache.put("z", b"zz", Some(Duration::ZERO), t0);
        assert_eq!(cache.get("a", t0).as_deref(), Some(&b"aaaa"[..]));
        assert_eq!(cache.get("z", t0), None, "a TTL of 0 keeps nothing");
        // Past its TTL: gone, from the index and from disk.
        assert_eq!(cache.get("a", t0 + Duration::from_secs(6)), None);
        assert_eq!(cache.usage(), (0, 0));
        assert!(!dir.path().join("data/a").exists());
        // Over the cap: the least recently used goes.
        cache.put("b", b"bbbb", None, t0);
        cache.put("c", b"cccc", None, t0);
        assert!(cache.get("b", t0).is_some());
        cache.put("d", b"dddd", None, t0);
        assert!(
            cache.get("c", t0).is_none(),
            "c was the least recently used"
        );
        assert!(cache.get("b", t0).is_some() && cache.get("d", t0).is_some());
        assert_eq!(cache.usage(), (2, 8));
    }

    #[test]
    fn a_key_decrypts_and_a_wrong_one_does_not() {
        let key = [7u8; 32];
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("key");
        let nonce = [9u8; 12];
        let mut sealed = nonce.to_vec();
        sealed.extend(
            cipher
                .encrypt(aes_gcm::Nonce::from_slice(&nonce), &b"secret rows"[..])
                .expect("encrypt"),
        );
        assert_eq!(decrypt(&key, &sealed).as_deref(), Some(&b"secret rows"[..]));
        assert_eq!(decrypt(&[8u8; 32], &sealed), None);
        assert_eq!(decrypt(&key, &sealed[..20]), None);
    }
}
