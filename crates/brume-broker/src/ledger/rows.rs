//! Building a unit's row: price at the admitted tier, Kumo's overrun
//! surcharge, who pays under the deal, the split among beneficiaries with
//! any slow-provider refund, and the private columns. No I/O, no hashing.

use super::*;
use brume_ledger::deal::Charge;
use brume_ledger::pricing::Fee;

/// What a unit consumed, where, and how it ended: a row's measured half.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ran<'a> {
    pub provider: &'a str,
    /// The provider's advertised speed (for the slow-provider refund).
    pub fitness_mips: u64,
    /// Its GPUs' benchmarked speed, each (bills `usage.gpu_us`).
    pub gpu_milli_tflops: u64,
    pub usage: &'a brume_api::Usage,
    pub attempts: u32,
    /// Cancelled while it ran (billed for its last progress report).
    pub cancelled: bool,
}

impl Ledger {
    /// The row of `work` (see [`Ledger::row`]); a row that can't be built
    /// is logged and left out, and the work is delivered all the same.
    pub(crate) fn build(
        &self,
        work: &Work,
        billing: &Billing,
        ran: Ran<'_>,
    ) -> (Option<Unsealed>, Option<Cost>) {
        match self.row(work, billing, ran) {
            Ok((row, cost)) => (Some(row), Some(cost)),
            Err(e) => {
                tracing::error!(work = %work.id, code = e.code(), "ledger row not built: {e}");
                (None, None)
            }
        }
    }

    /// Builds the row of a unit of work, not yet sealed: the fee at the
    /// admitted tier with the overrun surcharge, who pays under the deal,
    /// and the split with any slow-provider refund.
    pub(crate) fn row(
        &self,
        work: &Work,
        billing: &Billing,
        ran: Ran<'_>,
    ) -> Result<(Unsealed, Cost), BillError> {
        let now = crate::now_ms();
        let admission =
            billing
                .admission
                .unwrap_or(Admission::new(self.default_tier, self.default_tier, None));
        // A provider's word on its usage never exceeds what the work was
        // allowed: the escrow hold ([`Ledger::max_cost`]) bounds the row.
        let clamped = clamp(ran.usage, &work.spec.limits, work.spec.oci.gpus);
        let ran = Ran {
            usage: &clamped,
            ..ran
        };
        let gpu = gpu_flop(ran.usage.gpu_us, ran.gpu_milli_tflops);
        let (fee, surcharge) =
            self.fee(&work.spec.digest, billing, &admission, ran.usage, gpu, now)?;
        let charge = self.deal(&billing.requester).charge(&fee, &admission)?;
        let requester = clip(&billing.requester, MAX_ID_BYTES);
        let (payouts, charities) = self.payouts(&fee, billing, ran, requester)?;
        let payers = self.payers(&charge);
        // Billed: owed until settlement collects it (before the work's
        // hold is released on delivery).
        self.escrow.charge(charge_parts(&payers));
        let tier = self.tier_name(admission.tier).to_string();
        let usage = ran.usage;
        let data = RowData {
            schema_version: brume_ledger::row::SCHEMA_VERSION,
            work_id: work.id.to_string(),
            timestamp_ms: now,
            requester: requester.into(),
            end_user: clip(&billing.end_user, MAX_ID_BYTES).into(),
            provider: clip(ran.provider, MAX_ID_BYTES).into(),
            developer: clip(&billing.developer, MAX_ID_BYTES).into(),
            operator: self.operator.clone(),
            charities,
            service_digest: work.spec.digest.clone(),
            tier: tier.clone(),
            usage: RowUsage {
                fuel: usage.fuel,
                wall_us: usage.wall_us,
                peak_memory_bytes: usage.peak_memory_bytes,
                bytes_in: usage.bytes_in,
                bytes_out: usage.bytes_out,
                gpu_flop: gpu,
            },
            fee_currency: self.currency.clone(),
            fee_micros: u64::try_from(fee.fee_fiat_micros)
                .map_err(|_| BillError::Overflow("fee"))?,
            token_amount: fee.token_amount,
            surcharge,
            rate: row::ExchangeRate::per_whole_token(fee.rate.fiat_micros_per_token),
            payers,
            payouts,
            price_multiplier_ppm: admission.multiplier_ppm,
            utilisation_ppm: admission.utilisation_ppm,
        };
        let private = private_data(billing, ran, admission.downgraded());
        let cost = Cost {
            token_amount: data.token_amount,
            tier,
        };
        Ok(((data, private), cost))
    }

    /// The fee at the admitted tier plus Kumo's surcharge for work that
    /// overran its declared shape (returned apart too); records the usage
    /// for later estimates.
    fn fee(
        &self,
        digest: &str,
        billing: &Billing,
        admission: &Admission,
        usage: &brume_api::Usage,
        gpu_flop: u128,
        now: u64,
    ) -> Result<(Fee, u128), BillError> {
        {
            let mut seen = self.observed.lock();
            let o = seen.entry(digest.to_string()).or_default();
            o.n += 1;
            o.fuel += u128::from(usage.fuel);
            o.bytes_in += u128::from(usage.bytes_in);
            o.bytes_out += u128::from(usage.bytes_out);
        }
        let (fee, surcharge) = self.price(billing, admission, usage, gpu_flop, now)?;
        if let Some(o) = self.observed.lock().get_mut(digest) {
            o.tokens = o.tokens.saturating_add(fee.token_amount);
        }
        Ok((fee, surcharge))
    }

    /// The fee of `usage` (its GPU time as `gpu_flop`, see [`gpu_flop`]) at
    /// the admitted tier on the day of `now`, plus the overrun surcharge
    /// against the declared shape (also returned apart).
    pub(super) fn price(
        &self,
        billing: &Billing,
        admission: &Admission,
        usage: &brume_api::Usage,
        gpu_flop: u128,
        now: u64,
    ) -> Result<(Fee, u128), BillError> {
        let resources = ResourceUsage {
            fuel: usage.fuel,
            gpu_flop,
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
        };
        let day = self
            .pricer
            .config
            .day_of(i64::try_from(now).map_err(|_| BillError::Overflow("timestamp"))?)?;
        // The price in force at admission (the tier's curve, if any).
        let mut fee =
            self.pricer
                .fee_scaled(&resources, admission.tier, day, admission.multiplier_ppm)?;
        let measured = Measured {
            runtime_ms: usage.wall_us / 1000,
            peak_memory_bytes: usage.peak_memory_bytes,
        };
        let rule = &self.penalties.surcharge;
        let surcharge = rule.surcharge(fee.token_amount, &billing.declared, &measured)?;
        let surcharge_fiat = rule.surcharge(fee.fee_fiat_micros, &billing.declared, &measured)?;
        fee.token_amount += surcharge;
        fee.fee_fiat_micros += surcharge_fiat;
        Ok((fee, surcharge))
    }

    /// Who receives the fee: provider, developer (the operator when the
    /// developer is unknown), operator, charities, and Kumo's refund to the
    /// requester for a provider slower than it advertised.
    fn payouts(
        &self,
        fee: &Fee,
        billing: &Billing,
        ran: Ran<'_>,
        requester: &str,
    ) -> Result<(Vec<Payout>, Vec<String>), BillError> {
        let (parties, shares, known_developer) = self.parties(ran.provider, &billing.developer);
        let split = split::split(fee.token_amount, shares, &parties)?;
        let refund = self.penalties.slow_provider.refund(
            fee.token_amount,
            split.contributor().share,
            &SpeedSample {
                advertised_mips: ran.fitness_mips,
                fuel: ran.usage.fuel,
                // Rounded up: a partial millisecond counts, in the
                // requester's favour (as the surcharge's runtime is
                // rounded down).
                run_ms: ran.usage.wall_us.div_ceil(1000),
            },
        )?;
        let split = split.with_contributor_refund(refund)?;
        let (mut payouts, charities) = payout_lines(&split, known_developer);
        if split.refund > 0 {
            payouts.push(Payout {
                beneficiary: requester.into(),
                role: "refund".into(),
                amount: split.refund,
            });
        }
        Ok((payouts, charities))
    }

    /// Who pays, as the row records it.
    fn payers(&self, charge: &Charge) -> Vec<PayerPart> {
        charge
            .parts
            .iter()
            .map(|part| {
                let (account, kind) = match &part.payer {
                    Payer::Requester(a) => (a.0.as_str(), "requester"),
                    Payer::Subsidy(a) => (a.0.as_str(), "subsidy"),
                    Payer::Operator => (self.operator.as_str(), "operator"),
                    // Fronted by the operator; the account pays its
                    // daily fee instead (`subscription.rs`).
                    Payer::Subscription(_) => (self.operator.as_str(), "subscription"),
                };
                PayerPart {
                    account: account.into(),
                    kind: kind.into(),
                    amount: part.amount,
                }
            })
            .collect()
    }
}

/// A split's lines as a row's payouts (and the charities among them); an
/// unknown developer's line, always 0 (the operator took its share), is
/// left out.
fn payout_lines(split: &split::Split, known_developer: bool) -> (Vec<Payout>, Vec<String>) {
    let mut payouts = Vec::with_capacity(5);
    let mut charities = Vec::new();
    for line in split.lines() {
        if line.role == Role::Developer && !known_developer {
            continue;
        }
        let role = match (line.charity, line.role) {
            (true, _) => {
                charities.push(line.account.0.clone());
                "charity"
            }
            (false, Role::Contributor) => "provider",
            (false, Role::Developer) => "developer",
            (false, Role::Operator) => "operator",
        };
        payouts.push(Payout {
            beneficiary: line.account.0,
            role: role.into(),
            amount: line.amount,
        });
    }
    (payouts, charities)
}

/// A row's private columns: the request line and headers, and the unit's
/// metrics (attempts, wall time, the provider's advertised speed, and
/// whether it was cancelled or downgraded).
fn private_data(billing: &Billing, ran: Ran<'_>, downgraded: bool) -> PrivateData {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut metrics = BTreeMap::from([
        ("attempts".to_string(), u64::from(ran.attempts)),
        ("wall_us".to_string(), ran.usage.wall_us),
        ("provider_fitness_mips".to_string(), ran.fitness_mips),
    ]);
    if ran.cancelled {
        metrics.insert("cancelled".to_string(), 1);
    }
    if downgraded {
        metrics.insert("downgraded".to_string(), 1);
    }
    PrivateData {
        salt,
        request_line: clip(&billing.request_line, MAX_FIELD_BYTES).into(),
        request_headers: billing.request_headers.clone(),
        metrics,
        service_fields: BTreeMap::new(),
        custom_fields: billing.columns.clone(),
    }
}

/// `usage` with every figure at most what `limits` allow, and GPU time at
/// most `gpus` held for the whole timeout.
pub(super) fn clamp(
    usage: &brume_api::Usage,
    limits: &brume_api::Limits,
    gpus: u32,
) -> brume_api::Usage {
    let timeout_us = limits.timeout_ms.saturating_mul(1000);
    brume_api::Usage {
        fuel: usage.fuel.min(limits.fuel),
        peak_memory_bytes: usage.peak_memory_bytes.min(limits.memory_bytes),
        wall_us: usage.wall_us.min(timeout_us),
        bytes_in: usage.bytes_in.min(limits.max_input_bytes),
        bytes_out: usage.bytes_out.min(limits.max_output_bytes),
        gpu_us: usage.gpu_us.min(timeout_us.saturating_mul(u64::from(gpus))),
    }
}

/// GPU work in FLOP: `gpu_us` device-microseconds at `milli_tflops` each
/// (at most [`wire::MAX_GPU_MILLI_TFLOPS`]). One device-microsecond at one
/// milli-TFLOP/s is 1,000 FLOP; the pricing bills FLOP by the TFLOP-hour.
pub(crate) fn gpu_flop(gpu_us: u64, milli_tflops: u64) -> u128 {
    u128::from(gpu_us) * u128::from(milli_tflops.min(wire::MAX_GPU_MILLI_TFLOPS)) * 1000
}

/// One account paying another outside any unit of work (a subscription's
/// daily fee, an audit's refund): one payer part, one payout, no usage.
pub(super) struct Transfer<'a> {
    pub work_id: String,
    pub requester: &'a str,
    /// The paying account and its kind.
    pub payer: (&'a str, &'static str),
    /// The receiving account and its role.
    pub payee: (&'a str, &'static str),
    pub amount: u128,
    pub tier: String,
    pub fee_micros: u64,
}

/// One billing interval of a lease (see [`Ledger::lease_row`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseInterval<'a> {
    pub id: &'a str,
    pub seq: u64,
    pub account: &'a str,
    pub provider: &'a str,
    pub developer: &'a str,
    pub digest: &'a str,
    pub tier: &'a str,
    pub amount: u128,
    pub ms: u64,
}

impl Ledger {
    /// The public columns of `t`'s row.
    pub(super) fn transfer_row(&self, t: Transfer<'_>) -> RowData {
        RowData {
            schema_version: brume_ledger::row::SCHEMA_VERSION,
            work_id: t.work_id,
            timestamp_ms: crate::now_ms(),
            requester: t.requester.into(),
            end_user: String::new(),
            provider: String::new(),
            developer: String::new(),
            operator: self.operator.clone(),
            charities: Vec::new(),
            service_digest: String::new(),
            tier: t.tier,
            usage: RowUsage::default(),
            fee_currency: self.currency.clone(),
            fee_micros: t.fee_micros,
            token_amount: t.amount,
            surcharge: 0,
            rate: row::ExchangeRate::per_whole_token(self.fiat_micros_per_token),
            payers: vec![PayerPart {
                account: t.payer.0.into(),
                kind: t.payer.1.into(),
                amount: t.amount,
            }],
            payouts: vec![Payout {
                beneficiary: t.payee.0.into(),
                role: t.payee.1.into(),
                amount: t.amount,
            }],
            price_multiplier_ppm: brume_ledger::pricing::MULTIPLIER_ONE,
            utilisation_ppm: 0,
        }
    }

    /// The row a requester pays for a dispute it lost (see `dispute.rs`):
    /// the re-execution of job `work`, at the job's own cost, to the
    /// operator who ran it. Work id `dispute-fee-<work id>`, so a job is
    /// disputed once.
    pub(crate) fn dispute_fee(
        &self,
        work: brume_api::WorkId,
        requester: &str,
        amount: u128,
    ) -> Option<Unsealed> {
        let requester = clip(requester, MAX_ID_BYTES);
        self.settling_row(
            Transfer {
                work_id: format!("dispute-fee-{work}"),
                requester,
                payer: (requester, "dispute"),
                payee: (&self.operator, "reexecution"),
                amount,
                tier: String::new(),
                fee_micros: 0,
            },
            format!("dispute of {work}"),
        )
    }

    /// The row refunding `requester` the fee of work `work` that a
    /// re-execution refuted (an audit's, `audit.rs`, or a dispute's): the
    /// operator pays (it received the cheat's slashed stake), the
    /// requester receives. Work id `audit-refund-<work id>`, so work is
    /// refunded once.
    pub(crate) fn audit_refund(
        &self,
        work: brume_api::WorkId,
        requester: &str,
        amount: u128,
    ) -> Option<Unsealed> {
        let requester = clip(requester, MAX_ID_BYTES);
        self.settling_row(
            Transfer {
                work_id: format!("audit-refund-{work}"),
                requester,
                payer: (&self.operator, "audit_refund"),
                payee: (requester, "refund"),
                amount,
                tier: String::new(),
                fee_micros: 0,
            },
            format!("audit of {work}"),
        )
    }

    /// The row billing `requester` for a call this broker forwarded to
    /// `peer`, which ran it as work `peer_work` and billed this broker
    /// `amount` for it (at most the hold taken here). The payee is this
    /// broker's own account (`own`): what it collects from its requester
    /// covers what the peer collects from it. Work id
    /// `forwarded-<peer's work id>`, so a forwarded call is billed once.
    pub(crate) fn forwarded(
        &self,
        peer_work: &str,
        requester: &str,
        peer: &str,
        own: &str,
        amount: u128,
    ) -> Option<Unsealed> {
        let requester = clip(requester, MAX_ID_BYTES);
        self.settling_row(
            Transfer {
                work_id: clip(&format!("forwarded-{peer_work}"), MAX_ID_BYTES).to_string(),
                requester,
                payer: (requester, "requester"),
                payee: (own, "forwarded"),
                amount,
                tier: String::new(),
                fee_micros: 0,
            },
            format!("forwarded to {peer} as {peer_work}"),
        )
    }

    /// Who a fee is split between, with which shares, and whether the
    /// developer is known: an unknown developer's share goes to the
    /// operator.
    fn parties(&self, provider: &str, developer: &str) -> (Parties, &PayoutShares, bool) {
        let known_developer = !developer.is_empty();
        let account = |s: &str| Beneficiary::plain(Account::new(clip(s, MAX_ID_BYTES)));
        let parties = Parties {
            contributor: account(provider),
            developer: account(if known_developer {
                developer
            } else {
                &self.operator
            }),
            operator: Beneficiary {
                account: Account::new(&self.operator),
                charity: self.operator_charity.clone(),
            },
        };
        let shares = if known_developer {
            &self.shares
        } else {
            &self.no_developer
        };
        (parties, shares, known_developer)
    }

    /// One billing interval of a lease (see `leases/`): `amount` for `ms`
    /// of running time on `provider`, paid by its account and split like
    /// any fee. Work id `lease-<id>-<seq>`, so an interval is billed once.
    pub(crate) fn lease_row(&self, l: LeaseInterval<'_>) -> Result<Unsealed, BillError> {
        let requester = clip(l.account, MAX_ID_BYTES);
        let (parties, shares, known_developer) = self.parties(l.provider, l.developer);
        let split = split::split(l.amount, shares, &parties)?;
        let (payouts, charities) = payout_lines(&split, known_developer);
        let mut data = self.transfer_row(Transfer {
            work_id: format!("{}-{}", l.id, l.seq),
            requester,
            payer: (requester, "lease"),
            payee: (&self.operator, "operator"),
            amount: l.amount,
            tier: l.tier.to_string(),
            fee_micros: 0,
        });
        data.provider = clip(l.provider, MAX_ID_BYTES).into();
        data.developer = clip(l.developer, MAX_ID_BYTES).into();
        data.service_digest = l.digest.to_string();
        data.charities = charities;
        data.payouts = payouts;
        data.usage.wall_us = l.ms.saturating_mul(1000);
        self.escrow.charge(charge_parts(&data.payers));
        let mut metrics = BTreeMap::new();
        metrics.insert("lease_ms".to_string(), l.ms);
        let private = PrivateData {
            request_line: format!("lease {} interval {}", l.id, l.seq),
            metrics,
            ..PrivateData::default()
        };
        Ok((data, private))
    }

    /// A transfer's row, its payer's part charged to the escrow.
    fn settling_row(&self, t: Transfer<'_>, request_line: String) -> Option<Unsealed> {
        let data = self.transfer_row(t);
        self.escrow.charge(charge_parts(&data.payers));
        let private = PrivateData {
            request_line,
            ..PrivateData::default()
        };
        Some((data, private))
    }
}
