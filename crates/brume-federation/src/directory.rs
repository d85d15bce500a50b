//! The directory: the newest verified announcement of each broker heard,
//! until it expires, and how brokers are ranked for a client or a forward.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brume_api::federation::{DirectoryEntry, SignedAnnouncement};
use parking_lot::Mutex;
use tokio::sync::watch;

/// The brokers heard, keyed by address (lowercase).
#[derive(Debug)]
pub struct Directory {
    entries: Mutex<HashMap<String, Heard>>,
    /// Counts every change (an entry added, replaced by a newer one, or
    /// expired): tests and callers wait on it.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Heard {
    signed: SignedAnnouncement,
    at: Instant,
    expires: Instant,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            entries: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }
}

/// The most brokers a directory holds: a newcomer beyond it is ignored
/// until an entry expires (announcements cost nothing to forge a key for,
/// so memory must be bounded).
pub const MAX_BROKERS: usize = 10_000;

/// What happened to an announcement offered to the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// A broker not in the directory.
    New,
    /// A newer announcement of a broker already in it.
    Refreshed,
    /// Not newer than the one kept (a replay or a reordering): ignored.
    Stale,
}

impl Directory {
    /// Keeps `signed` (already verified) if it is newer than what is kept
    /// for its broker; it expires `ttl_ms` after `now` (at most `max_ttl`).
    pub fn offer(&self, signed: SignedAnnouncement, now: Instant, max_ttl: Duration) -> Offered {
        let key = signed.announcement.broker.to_ascii_lowercase();
        let ttl = Duration::from_millis(signed.announcement.ttl_ms).min(max_ttl);
        let heard = Heard {
            expires: now + ttl,
            at: now,
            signed,
        };
        let mut entries = self.entries.lock();
        let offered = match entries.get(&key) {
            Some(old) if old.signed.announcement.seq >= heard.signed.announcement.seq => {
                return Offered::Stale;
            }
            Some(_) => Offered::Refreshed,
            None if entries.len() >= MAX_BROKERS => return Offered::Stale,
            None => Offered::New,
        };
        entries.insert(key, heard);
        drop(entries);
        self.changed.send_modify(|n| *n += 1);
        offered
    }

    /// Drops what expired by `now`; the brokers dropped.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        self.entries.lock().retain(|k, h| {
            let keep = h.expires > now;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        if !gone.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        gone
    }

    /// The live entries at `now`, as directory entries (unranked).
    pub fn live(&self, now: Instant) -> Vec<DirectoryEntry> {
        self.entries
            .lock()
            .values()
            .filter(|h| h.expires > now)
            .map(|h| DirectoryEntry {
                announcement: h.signed.clone(),
                distance_km: None,
                age_ms: now.saturating_duration_since(h.at).as_millis() as u64,
                local: false,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// What a client asks of the directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Only brokers serving this `owner~name`.
    pub service: Option<String>,
    /// Rank by distance from this point (latitude, longitude in degrees).
    pub near: Option<(f64, f64)>,
    /// Only brokers with at least this many free slots.
    pub min_free: u64,
    /// Only brokers in this region.
    pub region: Option<String>,
}

/// Brokers closer than this to each other count as equally near, and are
/// then ordered by free capacity.
pub const NEAR_BAND_KM: f64 = 500.0;

/// Filters `entries` by `query` and ranks them: nearest band first (bands
/// of [`NEAR_BAND_KM`] from `query.near`), then most free slots, then
/// fewest queued, then nearest, then by address (so the order is total).
pub fn rank(entries: Vec<DirectoryEntry>, query: &Query) -> Vec<DirectoryEntry> {
    let mut out: Vec<DirectoryEntry> = entries
        .into_iter()
        .filter(|e| {
            let a = &e.announcement.announcement;
            a.capacity.slots_free >= query.min_free
                && query.region.as_ref().is_none_or(|r| &a.region == r)
                && query
                    .service
                    .as_ref()
                    .is_none_or(|s| a.services.iter().any(|x| x.name.eq_ignore_ascii_case(s)))
        })
        .map(|mut e| {
            let a = &e.announcement.announcement;
            e.distance_km = query
                .near
                .map(|(lat, lon)| distance_km(lat, lon, a.latitude, a.longitude));
            e
        })
        .collect();
    out.sort_by(|x, y| {
        let (a, b) = (&x.announcement.announcement, &y.announcement.announcement);
        let band = |e: &DirectoryEntry| e.distance_km.map(|d| (d / NEAR_BAND_KM) as u64);
        band(x)
            .cmp(&band(y))
            .then(b.capacity.slots_free.cmp(&a.capacity.slots_free))
            .then(a.queued.cmp(&b.queued))
            .then(
                x.distance_km
                    .unwrap_or(0.0)
                    .total_cmp(&y.distance_km.unwrap_or(0.0)),
            )
            .then(a.broker.cmp(&b.broker))
    });
    out
}

/// The brokers a provider in `region` (at `near`, if known) should join,
/// best first: those in its region, then the nearest (by
/// [`NEAR_BAND_KM`] bands), then those with the most queued work (they
/// need providers), then the fewest free slots; brokers in `exclude` (ones
/// it left) and, with `need_hub`, brokers without a hub wallet are left
/// out.
pub fn for_provider(
    entries: Vec<DirectoryEntry>,
    region: &str,
    near: Option<(f64, f64)>,
    exclude: &[String],
    need_hub: bool,
) -> Vec<DirectoryEntry> {
    let mut out: Vec<DirectoryEntry> = entries
        .into_iter()
        .filter(|e| {
            let a = &e.announcement.announcement;
            !exclude.iter().any(|x| x.eq_ignore_ascii_case(&a.broker))
                && (!need_hub || a.hub_wallet.is_some())
        })
        .map(|mut e| {
            let a = &e.announcement.announcement;
            e.distance_km = near.map(|(lat, lon)| distance_km(lat, lon, a.latitude, a.longitude));
            e
        })
        .collect();
    out.sort_by(|x, y| {
        let (a, b) = (&x.announcement.announcement, &y.announcement.announcement);
        let band = |e: &DirectoryEntry| e.distance_km.map(|d| (d / NEAR_BAND_KM) as u64);
        (a.region != region)
            .cmp(&(b.region != region))
            .then(band(x).cmp(&band(y)))
            .then(b.queued.cmp(&a.queued))
            .then(a.capacity.slots_free.cmp(&b.capacity.slots_free))
            .then(a.broker.cmp(&b.broker))
    });
    out
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Parses `LAT,LON` (degrees).
pub fn parse_point(text: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not LAT,LON"))?;
    let lat = coordinate(lat, 90)
        .ok_or_else(|| format!("latitude {lat:?} is not a number from -90 to 90"))?;
    let lon = coordinate(lon, 180)
        .ok_or_else(|| format!("longitude {lon:?} is not a number from -180 to 180"))?;
    Ok((lat, lon))
}

/// `-?D(.D+)?` with no leading zero and `|value| <= max`: plain decimal
/// notation, no exponent, no sign but `-`, no spaces.
fn coordinate(s: &str, max: u32) -> Option<f64> {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let whole: u32 = int.parse().ok()?;
    let zero_frac = frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    if whole > max || (whole == max && !zero_frac) {
        return None;
    }
    s.parse().ok()
}
