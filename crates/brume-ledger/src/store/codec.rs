//! The two blobs of a stored row.
//!
//! Both start with a format byte. Integers are LEB128 varints (u64 and
//! u128 alike), text is `varint(len) ‖ UTF-8`, a list is `varint(count) ‖
//! items`, a hash or the salt is its raw bytes.
//!
//! - `data`: `end_user`, `developer`, `operator`, `charities` (list of
//!   text), `service_digest`, `tier`, `wall_us`, `peak_memory_bytes`,
//!   `bytes_in`, `bytes_out`, `fee_currency`, `fee_micros`, `token_amount`,
//!   `surcharge`, `rate_fiat_micros`, `rate_token_units`, `payers` (list of
//!   account, kind, amount), `payouts` (list of beneficiary, role, amount),
//!   `private_hash` (32), `custom_hash` (32), then, from format 2 on, the
//!   row's `schema_version` and `gpu_flop` (a format 1 blob is a version 1
//!   row with no GPU work). The other public values are columns.
//! - `private`: `salt` (16), `request_line`, `request_headers`, `metrics`,
//!   `service_fields`, `custom_fields` (lists of name, value).
//!
//! A blob that does not decode exactly (truncated, trailing bytes, bad UTF-8,
//! an integer out of range) makes the row corrupt.

use std::collections::BTreeMap;

use crate::row::{ExchangeRate, Hash32, LedgerRow, PayerPart, Payout, PrivateData};

/// The `data` blob's format: 2 adds the row's version and GPU work, 3
/// its price multiplier and utilisation.
const DATA_FORMAT: u8 = 3;
/// The `private` blob's format.
const FORMAT: u8 = 1;

struct W(Vec<u8>);

impl W {
    fn uint(&mut self, mut n: u128) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn u64(&mut self, n: u64) {
        self.uint(u128::from(n));
    }

    fn len(&mut self, n: usize) {
        self.uint(n as u128);
    }

    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn pairs<'a>(&mut self, n: usize, items: impl Iterator<Item = (&'a String, &'a String)>) {
        self.len(n);
        for (k, v) in items {
            self.text(k);
            self.text(v);
        }
    }
}

/// The public values that are not columns of their own.
pub(super) fn data(row: &LedgerRow) -> Vec<u8> {
    let d = &row.data;
    let mut w = W(Vec::with_capacity(512));
    w.0.push(DATA_FORMAT);
    w.text(&d.end_user);
    w.text(&d.developer);
    w.text(&d.operator);
    w.len(d.charities.len());
    for c in &d.charities {
        w.text(c);
    }
    w.text(&d.service_digest);
    w.text(&d.tier);
    w.u64(d.usage.wall_us);
    w.u64(d.usage.peak_memory_bytes);
    w.u64(d.usage.bytes_in);
    w.u64(d.usage.bytes_out);
    w.text(&d.fee_currency);
    w.u64(d.fee_micros);
    w.uint(d.token_amount);
    w.uint(d.surcharge);
    w.uint(d.rate.fiat_micros);
    w.uint(d.rate.token_units);
    w.len(d.payers.len());
    for p in &d.payers {
        w.text(&p.account);
        w.text(&p.kind);
        w.uint(p.amount);
    }
    w.len(d.payouts.len());
    for p in &d.payouts {
        w.text(&p.beneficiary);
        w.text(&p.role);
        w.uint(p.amount);
    }
    w.0.extend_from_slice(&row.private_hash.0);
    w.0.extend_from_slice(&row.custom_hash.0);
    w.uint(u128::from(d.schema_version));
    w.uint(d.usage.gpu_flop);
    w.u64(d.price_multiplier_ppm);
    w.uint(u128::from(d.utilisation_ppm));
    w.0
}

pub(super) fn private(p: &PrivateData) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(256));
    w.0.push(FORMAT);
    w.0.extend_from_slice(&p.salt);
    w.text(&p.request_line);
    w.pairs(
        p.request_headers.len(),
        p.request_headers.iter().map(|(k, v)| (k, v)),
    );
    w.len(p.metrics.len());
    for (k, v) in &p.metrics {
        w.text(k);
        w.u64(*v);
    }
    w.pairs(p.service_fields.len(), p.service_fields.iter());
    w.pairs(p.custom_fields.len(), p.custom_fields.iter());
    w.0
}

/// The decoded `data` blob.
pub(super) struct Data {
    pub end_user: String,
    pub developer: String,
    pub operator: String,
    pub charities: Vec<String>,
    pub service_digest: String,
    pub tier: String,
    /// wall_us, peak_memory_bytes, bytes_in, bytes_out
    pub usage: [u64; 4],
    pub fee_currency: String,
    pub fee_micros: u64,
    pub token_amount: u128,
    pub surcharge: u128,
    pub rate: ExchangeRate,
    pub payers: Vec<PayerPart>,
    pub payouts: Vec<Payout>,
    pub private_hash: Hash32,
    pub custom_hash: Hash32,
    pub schema_version: u32,
    pub gpu_flop: u128,
    pub price_multiplier_ppm: u64,
    pub utilisation_ppm: u32,
}

struct R<'a>(&'a [u8]);

type Res<T> = Result<T, String>;

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn format(&mut self) -> Res<()> {
        match self.format_in(FORMAT)? {
            FORMAT => Ok(()),
            f => Err(format!("unknown format {f}")),
        }
    }

    /// The format byte, if it is at most `newest`.
    fn format_in(&mut self, newest: u8) -> Res<u8> {
        match self.take(1)? {
            [f] if (1..=newest).contains(f) => Ok(*f),
            [f] => Err(format!("unknown format {f}")),
            _ => Err("truncated".into()),
        }
    }

    fn uint(&mut self) -> Res<u128> {
        let mut n: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.take(1)?[0];
            let bits = u128::from(b & 0x7f);
            if shift == 126 && bits > 3 {
                return Err("integer out of range".into());
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("integer out of range".into())
    }

    fn u64(&mut self) -> Res<u64> {
        u64::try_from(self.uint()?).map_err(|_| "integer out of range".to_string())
    }

    fn len(&mut self) -> Res<usize> {
        let n = usize::try_from(self.uint()?).map_err(|_| "length out of range")?;
        if n > self.0.len() {
            return Err("truncated".into());
        }
        Ok(n)
    }

    fn text(&mut self) -> Res<String> {
        let n = self.len()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Res<T>) -> Res<Vec<T>> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn map<V>(&mut self, mut value: impl FnMut(&mut Self) -> Res<V>) -> Res<BTreeMap<String, V>> {
        let n = self.len()?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.text()?;
            let v = value(self)?;
            if out.insert(k, v).is_some() {
                return Err("a name repeats".into());
            }
        }
        Ok(out)
    }

    fn end(&self) -> Res<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

pub(super) fn decode_data(b: &[u8]) -> Res<Data> {
    let mut r = R(b);
    let format = r.format_in(DATA_FORMAT)?;
    let mut d = Data {
        end_user: r.text()?,
        developer: r.text()?,
        operator: r.text()?,
        charities: r.list(R::text)?,
        service_digest: r.text()?,
        tier: r.text()?,
        usage: [r.u64()?, r.u64()?, r.u64()?, r.u64()?],
        fee_currency: r.text()?,
        fee_micros: r.u64()?,
        token_amount: r.uint()?,
        surcharge: r.uint()?,
        rate: ExchangeRate {
            fiat_micros: r.uint()?,
            token_units: r.uint()?,
        },
        payers: r.list(|r| {
            Ok(PayerPart {
                account: r.text()?,
                kind: r.text()?,
                amount: r.uint()?,
            })
        })?,
        payouts: r.list(|r| {
            Ok(Payout {
                beneficiary: r.text()?,
                role: r.text()?,
                amount: r.uint()?,
            })
        })?,
        private_hash: Hash32(r.array()?),
        custom_hash: Hash32(r.array()?),
        schema_version: 1,
        gpu_flop: 0,
        price_multiplier_ppm: crate::pricing::MULTIPLIER_ONE,
        utilisation_ppm: 0,
    };
    if format >= 2 {
        d.schema_version = u32::try_from(r.uint()?).map_err(|_| "schema_version out of range")?;
        d.gpu_flop = r.uint()?;
    }
    if format >= 3 {
        d.price_multiplier_ppm = r.u64()?;
        d.utilisation_ppm = u32::try_from(r.uint()?).map_err(|_| "utilisation_ppm out of range")?;
    }
    r.end()?;
    Ok(d)
}

pub(super) fn decode_private(b: &[u8]) -> Res<PrivateData> {
    let mut r = R(b);
    r.format()?;
    let p = PrivateData {
        salt: r.array()?,
        request_line: r.text()?,
        request_headers: r.list(|r| Ok((r.text()?, r.text()?)))?,
        metrics: r.map(R::u64)?,
        service_fields: r.map(R::text)?,
        custom_fields: r.map(R::text)?,
    };
    r.end()?;
    Ok(p)
}
