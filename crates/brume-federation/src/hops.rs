//! Loop-safe forwarding: the hop list and TTL a forwarded request
//! carries, and which peer gets it.
//!
//! The origin broker sends `x-brume-hops: A` and `x-brume-ttl: TTL-1`;
//! each broker that forwards again appends itself and takes one off the
//! TTL. A broker never forwards to one on the list, nor with a TTL of 0,
//! so a request takes at most TTL hops and never loops.

use brume_api::federation::{DirectoryEntry, SignedAnnouncement};

/// Where a request stands on its way between brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hops {
    /// The brokers passed, origin first (addresses, lowercase).
    pub brokers: Vec<String>,
    /// How many more hops it may take.
    pub ttl: u32,
}

/// The most brokers a hop list may name.
pub const MAX_HOPS: usize = 16;

impl Hops {
    /// A request that arrived from a client (no hop yet).
    pub fn origin(ttl: u32) -> Hops {
        Hops {
            brokers: Vec::new(),
            ttl,
        }
    }

    /// Parses the two headers (both absent: `None`, a client's request).
    pub fn parse(hops: Option<&str>, ttl: Option<&str>) -> Result<Option<Hops>, String> {
        let (hops, ttl) = match (hops, ttl) {
            (None, None) => return Ok(None),
            (Some(h), Some(t)) => (h, t),
            _ => return Err("x-brume-hops and x-brume-ttl go together".into()),
        };
        let brokers: Vec<String> = hops
            .split(',')
            .map(|b| b.trim().to_ascii_lowercase())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() || brokers.len() > MAX_HOPS {
            return Err(format!(
                "x-brume-hops must name 1 to {MAX_HOPS} brokers, origin first"
            ));
        }
        if let Some(b) = brokers.iter().find(|b| !is_address(b)) {
            return Err(format!("x-brume-hops: {b:?} is not a broker address"));
        }
        let ttl: u32 = ttl
            .trim()
            .parse()
            .map_err(|_| format!("x-brume-ttl: {ttl:?} is not a whole number"))?;
        Ok(Some(Hops { brokers, ttl }))
    }

    /// The broker that sent it here (the last hop).
    pub fn sender(&self) -> Option<&str> {
        self.brokers.last().map(String::as_str)
    }

    pub fn contains(&self, broker: &str) -> bool {
        self.brokers.iter().any(|b| b.eq_ignore_ascii_case(broker))
    }

    /// The headers to send when `me` forwards it on: `None` if it may not
    /// go further (TTL spent, or `me` is already on the list: a loop).
    pub fn next(&self, me: &str) -> Option<Hops> {
        if self.ttl == 0 || self.contains(me) || self.brokers.len() >= MAX_HOPS {
            return None;
        }
        let mut brokers = self.brokers.clone();
        brokers.push(me.to_ascii_lowercase());
        Some(Hops {
            brokers,
            ttl: self.ttl - 1,
        })
    }

    /// `x-brume-hops`'s value.
    pub fn header(&self) -> String {
        self.brokers.join(",")
    }
}

fn is_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The peer to forward a unit of `service` to: one that serves it, is not
/// `me` and not on `hops`; those with free slots first, then the fewest
/// queued, then the nearest to (`lat`, `lon`).
pub fn choose<'a>(
    entries: &'a [DirectoryEntry],
    service: &str,
    me: &str,
    hops: &Hops,
    (lat, lon): (f64, f64),
) -> Option<&'a SignedAnnouncement> {
    entries
        .iter()
        .map(|e| &e.announcement)
        .filter(|s| {
            let a = &s.announcement;
            !a.broker.eq_ignore_ascii_case(me)
                && !hops.contains(&a.broker)
                && a.services
                    .iter()
                    .any(|x| x.name.eq_ignore_ascii_case(service))
        })
        .min_by(|x, y| {
            let (a, b) = (&x.announcement, &y.announcement);
            let d = |a: &brume_api::federation::Announcement| {
                crate::distance_km(lat, lon, a.latitude, a.longitude)
            };
            (a.capacity.slots_free == 0)
                .cmp(&(b.capacity.slots_free == 0))
                .then(a.queued.cmp(&b.queued))
                .then(d(a).total_cmp(&d(b)))
                .then(a.broker.cmp(&b.broker))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0x00000000000000000000000000000000000000aa";
    const B: &str = "0x00000000000000000000000000000000000000bb";
    const C: &str = "0x00000000000000000000000000000000000000cc";

    #[test]
    fn a_request_takes_at_most_ttl_hops_and_never_revisits_a_broker() {
        let start = Hops::origin(3);
        let at_b = start.next(A).expect("A may forward");
        assert_eq!((at_b.header(), at_b.ttl), (A.to_string(), 2));
        let at_c = at_b.next(B).expect("B may forward");
        assert_eq!(at_c.header(), format!("{A},{B}"));
        assert!(at_c.next(A).is_none(), "A is on the list: a loop");
        let at_d = at_c.next(C).expect("C may forward");
        assert_eq!(at_d.ttl, 0);
        assert!(
            at_d.next("0x00000000000000000000000000000000000000dd")
                .is_none()
        );
    }

    #[test]
    fn headers_parse_strictly() {
        assert_eq!(Hops::parse(None, None), Ok(None));
        assert!(Hops::parse(Some(A), None).is_err());
        assert!(Hops::parse(Some("nobody"), Some("1")).is_err());
        assert!(Hops::parse(Some(A), Some("-1")).is_err());
        let h = Hops::parse(Some(&format!("{A}, {B}")), Some("1"))
            .expect("valid headers")
            .expect("present");
        assert_eq!(h.sender(), Some(B));
        let many = vec![A; MAX_HOPS + 1].join(",");
        assert!(Hops::parse(Some(&many), Some("1")).is_err());
    }
}
