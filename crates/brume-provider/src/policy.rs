//! What a provider will run: blacklists, required module signatures, and
//! (for tests only) injected faults.
//!
//! # Blacklists
//!
//! A provider refuses (`Refused{reason: "blacklisted"}`) any assignment
//! whose module digest is on its local blacklist
//! ([`ProviderConfig::blacklist`](crate::ProviderConfig::blacklist)) or on
//! a subscribed list ([`ProviderConfig::blacklist_sources`](crate::ProviderConfig::blacklist_sources)),
//! before anything is fetched or compiled.
//!
//! A subscribed list is a file at a URL, signed by the key named with it
//! ([`BlacklistSource`], `URL@0xADDRESS` on the command line). Its format is
//! JSON:
//!
//! ```json
//! { "digests": ["<sha256 hex>", "..."], "issued_ms": 1767225600000, "signature": "0x<65 bytes hex>" }
//! ```
//!
//! `signature` is an EIP-191 (`personal_sign`) signature by the list's
//! signer over the canonical text from [`blacklist_message`]:
//!
//! ```text
//! brume blacklist v1
//! issued: <issued_ms>
//! <digest>
//! <digest>
//! ```
//!
//! with the digests as lowercase hex (a `sha256:` prefix in the file is
//! dropped), sorted, without duplicates, each line ending in `\n`
//! (including the last). [`sign_blacklist`] writes such a file.
//!
//! Lists are fetched when the provider starts (before it connects to the
//! broker) and then every [`ProviderConfig::blacklist_refresh`](crate::ProviderConfig::blacklist_refresh)
//! (default 10 minutes). A list that cannot be fetched, does not parse, is
//! not signed by its signer or is older (`issued_ms`) than the one in use is
//! logged and ignored: the last good list stays in force. The last good copy
//! of each list is kept in `data_dir/blacklists/`, so a restart with the
//! list's server down keeps it too.
//!
//! # Signed services
//!
//! With [`ProviderConfig::require_signed_by`](crate::ProviderConfig::require_signed_by)
//! set, an assignment must carry a `module_signature` by one of those
//! developers: EIP-191 over [`brume_api::wire::module_message`] of the
//! digest. A missing or invalid signature is refused with `unsigned`, a
//! valid one by another developer with `untrusted_developer`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use brume_api::wire::{Assign, Outcome, Refused};
use brume_identity::{EthAddress, Identity};
use brume_sandbox::Digest;

use crate::Shared;

/// A fault to inject, for tests of the broker's verification. Set only by
/// [`ProviderConfig::fault`](crate::ProviderConfig::fault) (and the hidden
/// `--fault` flag of a debug build of `brume provide`; a release binary has
/// no such flag); there is no config key or variable.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Run, then alter the output (first byte of stdout or of the HTTP
    /// body flipped, or one byte appended if empty) and sign that.
    WrongOutput,
    /// Run, then report and sign one more unit of fuel than was used.
    WrongFuel,
    /// Send `Accepted`, then nothing until cancelled or disconnected.
    Stall,
    /// Send `Accepted`, then forget the work: no `Done`, no `Refused`.
    Drop,
    /// Claim ten times the measured fitness in `Hello`.
    InflateMips,
    /// [`Fault::WrongOutput`] on every tenth result (a liar that hopes
    /// to go unnoticed), honest otherwise.
    WrongOutputTenth,
    /// Sign each batch of invocation receipts over a root its leaves don't
    /// make (answers it won't stand behind).
    BadRoot,
}

/// A `--fault` that is none of [`Fault`]'s.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault {0:?} (wrong-output, wrong-output-tenth, wrong-fuel, stall, drop, inflate-mips, bad-root)"
)]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Fault, UnknownFault> {
        Ok(match s {
            "wrong-output" => Fault::WrongOutput,
            "wrong-output-tenth" => Fault::WrongOutputTenth,
            "wrong-fuel" => Fault::WrongFuel,
            "stall" => Fault::Stall,
            "drop" => Fault::Drop,
            "inflate-mips" => Fault::InflateMips,
            "bad-root" => Fault::BadRoot,
            _ => return Err(UnknownFault(s.to_owned())),
        })
    }
}

/// Applies an output fault to an honest outcome (other faults leave it).
pub(crate) fn tamper(fault: Fault, mut outcome: Outcome) -> Outcome {
    /// Results seen under [`Fault::WrongOutputTenth`].
    static RESULTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let fault = match fault {
        Fault::WrongOutputTenth => {
            let n = RESULTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n % 10 != 9 {
                return outcome;
            }
            Fault::WrongOutput
        }
        f => f,
    };
    match fault {
        Fault::WrongOutput => {
            let out = match &mut outcome {
                Outcome::Exited { stdout, .. } | Outcome::Failed { stdout, .. } => stdout,
                Outcome::Responded { response, .. } => &mut response.body,
            };
            let mut bytes = out.to_vec();
            match bytes.first_mut() {
                Some(b) => *b ^= 1,
                None => bytes.push(b'!'),
            }
            *out = bytes.into();
        }
        Fault::WrongFuel => match &mut outcome {
            Outcome::Exited { usage, .. }
            | Outcome::Responded { usage, .. }
            | Outcome::Failed { usage, .. } => usage.fuel += 1,
        },
        Fault::Stall
        | Fault::Drop
        | Fault::InflateMips
        | Fault::WrongOutputTenth
        | Fault::BadRoot => {}
    }
    outcome
}

/// A subscribed blacklist: where it is and who must have signed it.
/// Parses from `URL@0xADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistSource {
    /// `http://…` or `https://…`.
    pub url: String,
    pub signer: EthAddress,
}

/// Why a string is not a [`BlacklistSource`] (`URL@0xSIGNER`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlacklistSourceError {
    /// No `@`.
    #[error("{0:?}: expected URL@0xSIGNER")]
    Syntax(String),
    /// The URL is not `http://…` or `https://…`.
    #[error("{0:?}: expected an http:// or https:// URL")]
    NotHttp(String),
    #[error("{signer:?} is not an 0x address")]
    BadSigner {
        signer: String,
        #[source]
        source: <EthAddress as FromStr>::Err,
    },
}

impl FromStr for BlacklistSource {
    type Err = BlacklistSourceError;
    fn from_str(s: &str) -> Result<BlacklistSource, BlacklistSourceError> {
        let (url, signer) = s
            .rsplit_once('@')
            .ok_or_else(|| BlacklistSourceError::Syntax(s.to_owned()))?;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(BlacklistSourceError::NotHttp(url.to_owned()));
        }
        let signer = signer
            .parse()
            .map_err(|source| BlacklistSourceError::BadSigner {
                signer: signer.to_owned(),
                source,
            })?;
        Ok(BlacklistSource {
            url: url.to_owned(),
            signer,
        })
    }
}

impl std::fmt::Display for BlacklistSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.url, self.signer)
    }
}

/// The text a list's signer signs (see the module docs).
pub fn blacklist_message<'a>(
    issued_ms: u64,
    digests: impl IntoIterator<Item = &'a Digest>,
) -> String {
    let sorted: BTreeSet<&Digest> = digests.into_iter().collect();
    let mut text = format!("brume blacklist v1\nissued: {issued_ms}\n");
    for d in sorted {
        text.push_str(&d.to_string());
        text.push('\n');
    }
    text
}

/// A signed list file (JSON) of `digests`, issued at `issued_ms`, signed
/// by `signer`.
pub fn sign_blacklist(
    signer: &Identity,
    issued_ms: u64,
    digests: &[Digest],
) -> Result<String, brume_identity::IdentityError> {
    let sig = signer.sign_message(blacklist_message(issued_ms, digests).as_bytes())?;
    let mut sorted: Vec<String> = digests.iter().map(Digest::to_string).collect();
    sorted.sort();
    sorted.dedup();
    Ok(serde_json::json!({
        "digests": sorted,
        "issued_ms": issued_ms,
        "signature": format!("0x{}", to_hex(&sig)),
    })
    .to_string())
}

/// A verified list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedList {
    pub(crate) issued_ms: u64,
    pub(crate) digests: HashSet<Digest>,
}

/// Why a subscribed list was not fetched, not accepted or not installed
/// (logged; the last good list stays in force).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListError {
    #[error("GET {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url}: larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("not JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("no integer \"issued_ms\"")]
    NoIssued,
    #[error("no array \"digests\"")]
    NoDigests,
    /// An element of `digests` (as JSON) that is not a string.
    #[error("digest {0} is not a string")]
    DigestNotString(serde_json::Value),
    #[error("{0}")]
    Digest(#[from] brume_sandbox::DigestParseError),
    #[error("no string \"signature\"")]
    NoSignature,
    #[error("signature {0:?} is not hex")]
    SignatureNotHex(String),
    #[error("signature: {0}")]
    Signature(#[source] brume_identity::IdentityError),
    #[error("{0}")]
    Install(#[from] InstallError),
}

/// Why [`Blacklists::install`] refused a verified list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InstallError {
    #[error("no source {0}")]
    NoSource(usize),
    #[error("issued at {issued_ms} ms, older than the list in use ({in_use_ms} ms)")]
    Older { issued_ms: u64, in_use_ms: u64 },
}

/// Parses a list file and checks its signature by `signer`.
pub(crate) fn verify_list(body: &[u8], signer: &EthAddress) -> Result<SignedList, ListError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(ListError::Json)?;
    let issued_ms = v["issued_ms"].as_u64().ok_or(ListError::NoIssued)?;
    let digests = v["digests"]
        .as_array()
        .ok_or(ListError::NoDigests)?
        .iter()
        .map(|d| {
            Ok(d.as_str()
                .ok_or_else(|| ListError::DigestNotString(d.clone()))?
                .parse::<Digest>()?)
        })
        .collect::<Result<HashSet<Digest>, ListError>>()?;
    let sig = v["signature"].as_str().ok_or(ListError::NoSignature)?;
    let sig = from_hex(sig.strip_prefix("0x").unwrap_or(sig))
        .ok_or_else(|| ListError::SignatureNotHex(sig.to_owned()))?;
    let message = blacklist_message(issued_ms, &digests);
    brume_identity::verify(message.as_bytes(), &sig, &signer.to_string())
        .map_err(ListError::Signature)?;
    Ok(SignedList { issued_ms, digests })
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// The blacklists in force: the local one and the last good copy of each
/// subscribed list.
#[derive(Debug)]
pub(crate) struct Blacklists {
    local: HashSet<Digest>,
    /// One per source, in the order of `blacklist_sources`.
    subscribed: parking_lot::RwLock<Vec<Option<SignedList>>>,
}

impl Blacklists {
    pub(crate) fn new(local: &[Digest], sources: usize) -> Blacklists {
        Blacklists {
            local: local.iter().copied().collect(),
            subscribed: parking_lot::RwLock::new(vec![None; sources]),
        }
    }

    /// Where `digest` is blacklisted, if it is: `None` for the local list,
    /// `Some(i)` for the i-th source.
    pub(crate) fn find(&self, digest: &Digest) -> Option<Option<usize>> {
        if self.local.contains(digest) {
            return Some(None);
        }
        let lists = self.subscribed.read();
        lists
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.digests.contains(digest)))
            .map(Some)
    }

    /// Installs `list` as source `i`'s unless it is older than the one in
    /// use. Returns whether it did.
    fn install(&self, i: usize, list: SignedList) -> Result<bool, InstallError> {
        let mut lists = self.subscribed.write();
        let Some(slot) = lists.get_mut(i) else {
            return Err(InstallError::NoSource(i));
        };
        match slot {
            Some(cur) if cur.issued_ms > list.issued_ms => Err(InstallError::Older {
                issued_ms: list.issued_ms,
                in_use_ms: cur.issued_ms,
            }),
            Some(cur) if *cur == list => Ok(false),
            _ => {
                *slot = Some(list);
                Ok(true)
            }
        }
    }

    /// Digests on the local list, and on each subscribed list (0 when none
    /// was ever loaded).
    pub(crate) fn sizes(&self) -> (usize, Vec<usize>) {
        let lists = self.subscribed.read();
        (
            self.local.len(),
            lists
                .iter()
                .map(|l| l.as_ref().map_or(0, |l| l.digests.len()))
                .collect(),
        )
    }
}

fn refused(reason: &str, message: impl Into<String>) -> Refused {
    Refused {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// The blacklist and signature checks of an assignment for `digest`.
pub(crate) fn check(shared: &Shared, a: &Assign, digest: &Digest) -> Result<(), Refused> {
    if let Some(which) = shared.blacklists.find(digest) {
        let list = match which {
            None => "this provider's local blacklist".to_owned(),
            Some(i) => match shared.config.blacklist_sources.get(i) {
                Some(s) => format!("the blacklist {s}"),
                None => "a subscribed blacklist".to_owned(),
            },
        };
        return Err(refused(
            "blacklisted",
            format!("module {digest} is on {list}"),
        ));
    }
    let allowed = &shared.config.require_signed_by;
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(sig) = &a.module_signature else {
        return Err(refused(
            "unsigned",
            format!(
                "this provider runs only modules signed by an allowed developer; module {digest} carries no signature"
            ),
        ));
    };
    let message = brume_api::wire::module_message(&digest.to_string());
    let developer = brume_identity::verify(message.as_bytes(), &sig.signature, &sig.developer)
        .map_err(|e| {
            refused(
                "unsigned",
                format!(
                    "module {digest}: the signature claimed by {} does not verify: {e}",
                    sig.developer
                ),
            )
        })?;
    if !allowed.contains(&developer) {
        return Err(refused(
            "untrusted_developer",
            format!(
                "module {digest} is signed by {developer}, not by a developer this provider trusts"
            ),
        ));
    }
    Ok(())
}

/// How long one list fetch may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest list accepted (about 100k digests).
const LIST_MAX_BYTES: usize = 8 << 20;

fn cache_path(data_dir: &Path, source: &BlacklistSource) -> PathBuf {
    data_dir
        .join("blacklists")
        .join(format!("{}.json", Digest::of(source.url.as_bytes())))
}

/// Loads the last good copy of each list from the data dir. Called once at
/// start-up, before the first fetch.
pub(crate) fn load_cached(shared: &Shared) {
    for (i, source) in shared.config.blacklist_sources.iter().enumerate() {
        let path = cache_path(&shared.config.data_dir, source);
        let Ok(body) = std::fs::read(&path) else {
            continue;
        };
        let installed =
            verify_list(&body, &source.signer).and_then(|l| Ok(shared.blacklists.install(i, l)?));
        match installed {
            Ok(_) => {
                tracing::info!(list = %source, path = %path.display(), "blacklist loaded from the last good copy")
            }
            Err(e) => {
                tracing::warn!(list = %source, path = %path.display(), error = %e, "ignoring the saved copy of a blacklist")
            }
        }
    }
}

/// Fetches every subscribed list once, concurrently, and installs the good
/// ones. Failures are logged; the lists in force stay.
pub(crate) async fn refresh(shared: &Arc<Shared>) {
    let fetches = shared
        .config
        .blacklist_sources
        .iter()
        .enumerate()
        .map(|(i, source)| refresh_one(shared, i, source));
    futures_util::future::join_all(fetches).await;
}

async fn refresh_one(shared: &Shared, i: usize, source: &BlacklistSource) {
    let result = async {
        let body = fetch_list(&shared.lists_http, &source.url).await?;
        let list = verify_list(&body, &source.signer)?;
        let size = list.digests.len();
        let changed = shared.blacklists.install(i, list)?;
        Ok::<_, ListError>((body, size, changed))
    }
    .await;
    match result {
        Ok((body, size, true)) => {
            tracing::info!(list = %source, digests = size, "blacklist updated");
            let path = cache_path(&shared.config.data_dir, source);
            let write = {
                let path = path.clone();
                move || {
                    path.parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&path, &body))
                }
            };
            let saved = tokio::task::spawn_blocking(write)
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = saved {
                tracing::warn!(path = %path.display(), error = %e, "save a copy of a blacklist");
            }
        }
        Ok((_, _, false)) => tracing::debug!(list = %source, "blacklist unchanged"),
        Err(e) => {
            tracing::warn!(list = %source, error = %e, "blacklist not updated; the last good one stays")
        }
    }
}

async fn fetch_list(http: &reqwest::Client, url: &str) -> Result<bytes::Bytes, ListError> {
    let fetch = |source| ListError::Fetch {
        url: url.to_owned(),
        source,
    };
    let too_large = || ListError::TooLarge {
        url: url.to_owned(),
        max: LIST_MAX_BYTES,
    };
    let resp = http
        .get(url)
        .timeout(LIST_TIMEOUT)
        .send()
        .await
        .map_err(fetch)?;
    if !resp.status().is_success() {
        return Err(ListError::Status {
            url: url.to_owned(),
            status: resp.status(),
        });
    }
    if resp
        .content_length()
        .is_some_and(|n| n > LIST_MAX_BYTES as u64)
    {
        return Err(too_large());
    }
    let body = resp.bytes().await.map_err(fetch)?;
    if body.len() > LIST_MAX_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

/// Refreshes the lists every `blacklist_refresh` until the provider stops.
/// Owned by [`RunningProvider`](crate::RunningProvider), which aborts it.
pub(crate) async fn refresh_loop(shared: Arc<Shared>) {
    let every = shared
        .config
        .blacklist_refresh
        .max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => refresh(&shared).await,
            () = shared.stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_verify_only_under_their_signer() {
        let signer = Identity::random();
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let body = sign_blacklist(&signer, 42, &[b, a, b]).expect("sign");
        let list = verify_list(body.as_bytes(), &signer.address()).expect("verifies");
        assert_eq!(list.issued_ms, 42);
        assert_eq!(list.digests, HashSet::from([a, b]));
        assert!(verify_list(body.as_bytes(), &Identity::random().address()).is_err());
        let tampered = body.replace("\"issued_ms\":42", "\"issued_ms\":43");
        assert_ne!(tampered, body);
        assert!(verify_list(tampered.as_bytes(), &signer.address()).is_err());
        assert!(matches!(
            verify_list(tampered.as_bytes(), &signer.address()),
            Err(ListError::Signature(_))
        ));
        assert!(matches!(
            verify_list(b"{", &signer.address()),
            Err(ListError::Json(_))
        ));
        let bad_digest = body.replace(&a.to_string(), "zz");
        let err = verify_list(bad_digest.as_bytes(), &signer.address()).err();
        assert!(matches!(err, Some(ListError::Digest(_))), "{err:?}");
        assert_eq!(
            verify_list(br#"{"issued_ms": 1, "digests": [7]}"#, &signer.address())
                .err()
                .map(|e| e.to_string()),
            Some("digest 7 is not a string".to_string())
        );
        assert_eq!(
            blacklist_message(7, &[b, a]),
            format!(
                "brume blacklist v1\nissued: 7\n{}\n{}\n",
                a.min(b),
                a.max(b)
            )
        );
    }

    #[test]
    fn older_lists_do_not_replace_newer_ones() {
        let lists = Blacklists::new(&[], 1);
        let a = Digest::of(b"a");
        let list = |issued_ms| SignedList {
            issued_ms,
            digests: HashSet::from([a]),
        };
        assert_eq!(lists.install(0, list(2)), Ok(true));
        assert_eq!(lists.install(0, list(2)), Ok(false));
        assert!(lists.install(0, list(1)).is_err());
        assert_eq!(
            lists.install(0, list(1)),
            Err(InstallError::Older {
                issued_ms: 1,
                in_use_ms: 2
            })
        );
        assert_eq!(
            lists.install(0, list(1)).err().map(|e| e.to_string()),
            Some("issued at 1 ms, older than the list in use (2 ms)".to_string())
        );
        assert_eq!(lists.install(1, list(3)), Err(InstallError::NoSource(1)));
        assert_eq!(lists.find(&a), Some(Some(0)));
        assert_eq!(lists.sizes(), (0, vec![1]));
    }

    #[test]
    fn sources_and_faults_parse() {
        let s: BlacklistSource = "http://u:p@h:1/l.json@0x0000000000000000000000000000000000000001"
            .parse()
            .expect("parses");
        assert_eq!(s.url, "http://u:p@h:1/l.json");
        assert!("http://h/l.json".parse::<BlacklistSource>().is_err());
        let s: BlacklistSource = "https://h/l@0x0000000000000000000000000000000000000001"
            .parse()
            .expect("parses");
        assert_eq!(s.url, "https://h/l");
        assert_eq!("stall".parse(), Ok(Fault::Stall));
        assert!("wrong".parse::<Fault>().is_err());
        assert_eq!(
            "http://h/l.json".parse::<BlacklistSource>(),
            Err(BlacklistSourceError::Syntax("http://h/l.json".into()))
        );
        assert_eq!(
            "ftp://h/l@0x0000000000000000000000000000000000000001"
                .parse::<BlacklistSource>()
                .err()
                .map(|e| e.to_string()),
            Some(r#""ftp://h/l": expected an http:// or https:// URL"#.to_string())
        );
        assert!(matches!(
            "http://h/l@0x12".parse::<BlacklistSource>(),
            Err(BlacklistSourceError::BadSigner { signer, .. }) if signer == "0x12"
        ));
        assert_eq!(
            "wrong".parse::<Fault>().err().map(|e| e.to_string()),
            Some(
                r#"unknown fault "wrong" (wrong-output, wrong-output-tenth, wrong-fuel, stall, drop, inflate-mips, bad-root)"#
                    .to_string()
            )
        );
    }
}
