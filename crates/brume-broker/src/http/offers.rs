//! `GET /v1/offers`: what the connected providers offer, filtered, sorted
//! and paged (the StackMonkey listing). Every figure is the broker's own
//! measure where it has one (speed, bandwidth, memory, reputation); the
//! location and region are the provider's word.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use brume_api::ErrorCode;
use brume_api::rest::{Offer, OfferList};
use serde::Deserialize;

use super::auth::Auth;
use super::{Fail, Res, Sh};

/// The most offers on one page.
const MAX_LIMIT: u64 = 200;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OfferQuery {
    /// Only providers that run this: `wasm` or `oci`.
    #[param(pattern = "^(?:wasm|oci)$")]
    runtime: Option<String>,
    /// At least this many slots free now.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    min_slots: Option<u32>,
    /// At least this much memory (bytes).
    min_memory: Option<u64>,
    /// At least this many GPUs.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    gpu: Option<u32>,
    /// Only this region.
    region: Option<String>,
    /// `LAT,LON` in degrees: adds each offer's distance, and lets `sort=distance`.
    #[param(
        pattern = r"^-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?),-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)$"
    )]
    near: Option<String>,
    /// An ask at most this (micro-tokens per 10^9 fuel).
    max_price: Option<u64>,
    /// Only providers with this module or image digest (sha256) cached.
    #[param(pattern = "^(?:sha256:)?[0-9a-fA-F]{64}$")]
    image: Option<String>,
    /// `price` (cheapest first, the default), `distance` (nearest first,
    /// with `near`) or `reputation` (best first).
    #[param(pattern = "^(?:price|distance|reputation)$")]
    sort: Option<String>,
    /// At most this many (default 50, at most 200).
    limit: Option<u64>,
    /// Skip this many (paging).
    offset: Option<u64>,
}

#[utoipa::path(get, path = "/v1/offers", tag = "status", params(OfferQuery),
    responses((status = 200, description = "The offers that match, one page", body = OfferList),
        (status = 400, description = "A filter that doesn't parse", body = brume_api::ApiError)),
    security(("api_key" = [])))]
pub(super) async fn offers(
    State(shared): Sh,
    _auth: Auth,
    query: Result<Query<OfferQuery>, QueryRejection>,
) -> Res<axum::Json<OfferList>> {
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {}", e.body_text()),
        )
    })?;
    let filter = Filter::of(&q)?;
    let all = shared.lifecycle.read(|s| {
        s.providers
            .values()
            .map(|p| {
                let r = s.reputation(&p.address);
                let digest_cached = filter.image.as_ref().is_some_and(|d| p.cached.contains(d));
                offer(p, &r, digest_cached)
            })
            .collect::<Vec<_>>()
    });
    Ok(axum::Json(filter.page(all)))
}

fn offer(p: &crate::sched::ProviderEntry, r: &brume_api::rest::Reputation, cached: bool) -> Offer {
    let mut runtimes = vec!["wasm".to_string()];
    if p.caps.containers {
        runtimes.push("oci".into());
    }
    let attempts = r.results + r.failures + r.timeouts;
    Offer {
        address: p.address.clone(),
        region: p.caps.region.clone(),
        location: p
            .caps
            .location
            .map(|[lat, lon]| [f64::from(lat) / 1e6, f64::from(lon) / 1e6]),
        distance_km: None,
        runtimes,
        slots: p.caps.slots,
        slots_free: p.caps.slots.saturating_sub(p.busy),
        memory_bytes: p.caps.memory_bytes,
        measured_mips: p.measured_mips,
        measured_mbps: p.measured_mbps,
        gpus: p.caps.gpus.clone(),
        price_ask: p.price_ask,
        policy: p.caps.policy,
        reputation_ppm: (r.results + 1) * 1_000_000 / (attempts + 1),
        results: r.results,
        tier: p.tier,
        cached,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Price,
    Distance,
    Reputation,
}

/// A parsed [`OfferQuery`].
#[derive(Debug)]
struct Filter {
    runtime: Option<String>,
    min_slots: u32,
    min_memory: u64,
    gpu: u32,
    region: Option<String>,
    near: Option<(f64, f64)>,
    max_price: Option<u64>,
    image: Option<String>,
    sort: Sort,
    limit: u64,
    offset: u64,
}

fn bad(m: String) -> Fail {
    Fail::new(ErrorCode::InvalidRequest, m)
}

impl Filter {
    fn of(q: &OfferQuery) -> Res<Filter> {
        // The document says int64: a larger count is not one.
        for (name, v) in [
            ("min_memory", q.min_memory),
            ("max_price", q.max_price),
            ("limit", q.limit),
            ("offset", q.offset),
        ] {
            if v.is_some_and(|v| i64::try_from(v).is_err()) {
                return Err(bad(format!("{name}: at most {}", i64::MAX)));
            }
        }
        let runtime = match q.runtime.as_deref() {
            None => None,
            Some(r @ ("wasm" | "oci")) => Some(r.to_string()),
            Some(r) => return Err(bad(format!("runtime: {r:?} is not wasm or oci"))),
        };
        let near = q.near.as_deref().map(parse_near).transpose()?;
        let sort = match q.sort.as_deref() {
            None | Some("price") => Sort::Price,
            Some("distance") if near.is_some() => Sort::Distance,
            Some("distance") => return Err(bad("sort: distance needs near=LAT,LON".into())),
            Some("reputation") => Sort::Reputation,
            Some(s) => {
                return Err(bad(format!(
                    "sort: {s:?} is not price, distance or reputation"
                )));
            }
        };
        let image = q
            .image
            .as_deref()
            .map(|d| brume_api::parse_digest(d).map(hex::encode))
            .transpose()
            .map_err(|e| bad(format!("image: {e}")))?;
        Ok(Filter {
            runtime,
            min_slots: q.min_slots.unwrap_or(0),
            min_memory: q.min_memory.unwrap_or(0),
            gpu: q.gpu.unwrap_or(0),
            region: q.region.clone(),
            near,
            max_price: q.max_price,
            image,
            sort,
            limit: q.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
            offset: q.offset.unwrap_or(0),
        })
    }

    fn keeps(&self, o: &Offer) -> bool {
        self.runtime.as_ref().is_none_or(|r| o.runtimes.contains(r))
            && o.slots_free >= self.min_slots
            && o.memory_bytes >= self.min_memory
            && o.gpus.as_ref().map_or(0, |g| g.count) >= self.gpu
            && self.region.as_ref().is_none_or(|r| *r == o.region)
            && self.max_price.is_none_or(|m| o.price_ask <= m)
            && (self.image.is_none() || o.cached)
    }

    /// The matching offers, with distances, sorted (the address breaks
    /// ties, so pages are stable), one page of them.
    fn page(&self, all: Vec<Offer>) -> OfferList {
        let mut kept: Vec<Offer> = all
            .into_iter()
            .filter(|o| self.keeps(o))
            .map(|mut o| {
                o.distance_km = self
                    .near
                    .zip(o.location)
                    .map(|(a, [lat, lon])| km(a, (lat, lon)));
                o
            })
            .collect();
        let far = |o: &Offer| o.distance_km.unwrap_or(f64::INFINITY);
        kept.sort_by(|a, b| {
            let first = match self.sort {
                Sort::Price => a.price_ask.cmp(&b.price_ask),
                Sort::Distance => far(a).total_cmp(&far(b)),
                Sort::Reputation => b
                    .reputation_ppm
                    .cmp(&a.reputation_ppm)
                    .then(b.results.cmp(&a.results)),
            };
            first.then_with(|| a.address.cmp(&b.address))
        });
        let total = kept.len() as u64;
        let offers: Vec<Offer> = kept
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(self.limit as usize)
            .collect();
        let end = self.offset.saturating_add(offers.len() as u64);
        OfferList {
            offers,
            total,
            next_offset: (end < total).then_some(end),
        }
    }
}

/// `LAT,LON` in degrees.
fn parse_near(s: &str) -> Res<(f64, f64)> {
    let parsed = s.split_once(',').and_then(|(a, b)| {
        let lat = a.trim().parse::<f64>().ok()?;
        let lon = b.trim().parse::<f64>().ok()?;
        (lat.abs() <= 90.0 && lon.abs() <= 180.0).then_some((lat, lon))
    });
    parsed.ok_or_else(|| {
        bad(format!(
            "near: {s:?} is not LAT,LON in degrees (latitude -90 to 90, longitude -180 to 180)"
        ))
    })
}

/// Great-circle distance in km (haversine, on a 6371 km sphere).
fn km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(address: &str, price: u64, location: Option<[f64; 2]>) -> Offer {
        Offer {
            address: address.into(),
            region: "eu".into(),
            location,
            distance_km: None,
            runtimes: vec!["wasm".into()],
            slots: 2,
            slots_free: 2,
            memory_bytes: 1 << 30,
            measured_mips: 1000,
            measured_mbps: 100,
            gpus: None,
            price_ask: price,
            policy: Default::default(),
            reputation_ppm: 1_000_000,
            results: 0,
            tier: 4,
            cached: false,
        }
    }

    #[test]
    fn distances_sort_and_page() {
        // Paris to London is about 344 km.
        let d = km((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343.5).abs() < 2.0, "{d}");
        let q = OfferQuery {
            near: Some("48.85,2.35".into()),
            sort: Some("distance".into()),
            limit: Some(2),
            ..OfferQuery::default()
        };
        let f = Filter::of(&q).expect("filter");
        let all = vec![
            offer("0xc", 1, Some([51.5, -0.13])),
            offer("0xa", 3, None),
            offer("0xb", 2, Some([48.86, 2.35])),
        ];
        let page = f.page(all.clone());
        let order: Vec<&str> = page.offers.iter().map(|o| o.address.as_str()).collect();
        assert_eq!(
            (order, page.total, page.next_offset),
            (vec!["0xb", "0xc"], 3, Some(2))
        );
        let q = OfferQuery {
            offset: Some(2),
            ..q
        };
        let page = Filter::of(&q).expect("filter").page(all);
        assert_eq!(page.offers[0].address, "0xa", "no location sorts last");
        assert_eq!(page.next_offset, None);
    }

    #[test]
    fn bad_filters_are_refused_with_the_field() {
        for (q, field) in [
            (
                OfferQuery {
                    runtime: Some("java".into()),
                    ..Default::default()
                },
                "runtime",
            ),
            (
                OfferQuery {
                    near: Some("91,0".into()),
                    ..Default::default()
                },
                "near",
            ),
            (
                OfferQuery {
                    sort: Some("distance".into()),
                    ..Default::default()
                },
                "sort",
            ),
            (
                OfferQuery {
                    sort: Some("age".into()),
                    ..Default::default()
                },
                "sort",
            ),
            (
                OfferQuery {
                    image: Some("nothex".into()),
                    ..Default::default()
                },
                "image",
            ),
        ] {
            let e = Filter::of(&q).expect_err(field);
            assert!(e.0.message.starts_with(field), "{}", e.0.message);
        }
    }
}
