//! The console's HTML: one function per page, server-rendered. Every value
//! that comes from outside goes through [`esc`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use brume_api::rest::{JobInfo, ProviderInfo, ServiceInfo, Status};
use brume_ledger::row::LedgerRow;

use crate::accounts::Session;

/// HTML-escapes text for an element or a quoted attribute.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/console", "Overview"),
    ("jobs", "/console/jobs", "Jobs"),
    ("services", "/console/services", "Services"),
    ("ledger", "/console/ledger", "Ledger"),
    ("earnings", "/console/earnings", "Earnings"),
    ("providers", "/console/providers", "Providers"),
    ("operator", "/console/operator", "Operator"),
];

/// A whole page: `page` names it (for the nav and the script), `data`
/// adds `data-*` attributes to the body.
pub(super) fn layout(
    page: &str,
    title: &str,
    who: Option<&Session>,
    data: &str,
    body: &str,
) -> String {
    let mut nav = String::new();
    for (id, href, label) in NAV {
        let admin = who.is_some_and(|s| s.scopes.contains(&brume_api::rest::Scope::Admin));
        if *id == "operator" && !admin {
            continue;
        }
        let current = if *id == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    let (csrf, who_html) = match who {
        Some(s) => (
            esc(&s.csrf),
            format!(
                "<span>Signed in as <strong>{}</strong> (<span class=\"mono\">{}</span>)</span>\
                 <form method=\"post\" action=\"/console/logout\" class=\"inline\">{}\
                 <button class=\"secondary\" type=\"submit\">Sign out</button></form>",
                esc(&s.label),
                esc(&s.account),
                csrf_field(s)
            ),
        ),
        None => (
            String::new(),
            "<a href=\"/console/login\">Sign in</a>".to_string(),
        ),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\">\
         <title>{} · brume console</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">\
         <script src=\"/console/static/console.js\" defer></script></head>\
         <body data-page=\"{page}\"{data}>\
         <a href=\"#main\" class=\"skip\">Skip to content</a>\
         <header><a class=\"brand\" href=\"/console\">brume</a>\
         <nav aria-label=\"Console\"><ul>{nav}</ul></nav><div class=\"who\">{who_html}</div></header>\
         <main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

pub(super) fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

fn card(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\" id=\"{id}-label\">{label}</div>\
         <div class=\"value\" id=\"{id}\" aria-labelledby=\"{id}-label\" aria-live=\"polite\">{}</div></div>",
        esc(value)
    )
}

pub(super) fn overview(s: &Status) -> String {
    let c = &s.capacity;
    let q = &s.queues;
    format!(
        "<p>Broker <span class=\"mono\">{}</span> in region {}, version {}. The figures below update live.</p>\
         <div class=\"cards\">{}{}{}{}{}{}</div>",
        esc(&s.broker_id),
        esc(&s.region),
        esc(&s.version),
        card(
            "providers",
            "Providers connected",
            &s.providers_connected.to_string()
        ),
        card(
            "slots",
            "Slots",
            &format!("{} of {} free", c.slots_free, c.slots_total)
        ),
        card("waiting", "Calls waiting", &q.waiting.to_string()),
        card("in-flight", "In flight", &q.in_flight.to_string()),
        card("jobs-open", "Jobs open", &q.jobs_open.to_string()),
        card("uptime", "Uptime", &format!("{} s", s.uptime_s)),
    )
}

pub(super) fn login(error: Option<&str>, csrf: &str, signup: bool) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let signup = if signup {
        "<p>No account? <a href=\"/console/signup\">Sign up</a>.</p>"
    } else {
        ""
    };
    format!(
        "{error}<form class=\"stack\" method=\"post\" action=\"/console/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
         <p>Or sign in with an API key instead:</p>\
         <label for=\"api_key\">API key</label><input id=\"api_key\" name=\"api_key\" type=\"password\" autocomplete=\"off\">\
         <button type=\"submit\">Sign in</button></form>{signup}",
        csrf = esc(csrf)
    )
}

pub(super) fn signup(error: Option<&str>, csrf: &str) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{error}<form class=\"stack\" method=\"post\" action=\"/console/signup\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\">\
         <label for=\"address\">Account address (0x…)</label><input id=\"address\" name=\"address\">\
         <label for=\"password\">Password (at least 10 characters)</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\">\
         <button type=\"submit\">Create the account</button></form>",
        csrf = esc(csrf)
    )
}

fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 as a calendar date (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day of a time, `YYYY-MM-DD`.
pub(super) fn day(ms: u64) -> String {
    time(ms)[..10].to_string()
}

pub(super) fn jobs(list: &[JobInfo], session: &Session, error: Option<&str>) -> String {
    let mut rows = String::new();
    for j in list {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/console/jobs/{id}\" class=\"mono\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(j.service.as_deref().unwrap_or(&j.digest)),
            esc(j.state.as_str()),
            time(j.created_at_ms),
            id = j.id
        );
    }
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h2>Run a job</h2>{error}<form class=\"stack\" method=\"post\" action=\"/console/jobs\">{}\
         <label for=\"service\">Service</label><input id=\"service\" name=\"service\" required>\
         <label for=\"args\">Arguments (separated by spaces)</label><input id=\"args\" name=\"args\">\
         <label for=\"stdin\">Standard input</label><textarea id=\"stdin\" name=\"stdin\" rows=\"3\"></textarea>\
         <button type=\"submit\">Run</button></form>\
         <h2>Your jobs</h2><table><caption class=\"sr\">Newest first</caption>\
         <thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Service</th><th scope=\"col\">State</th><th scope=\"col\">Created (UTC)</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        csrf_field(session)
    )
}

pub(super) fn job(j: &JobInfo, fuel_limit: u64) -> String {
    format!(
        "<dl><dt>Service</dt><dd>{}</dd><dt>State</dt><dd id=\"state\" aria-live=\"polite\">{}</dd>\
         <dt>Created</dt><dd>{}</dd><dt>Exit code</dt><dd id=\"exit-code\">–</dd></dl>\
         <label for=\"progress\">Progress <span id=\"progress-label\">0%</span></label>\
         <progress id=\"progress\" max=\"100\" value=\"0\" data-fuel=\"{fuel_limit}\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"0\"></progress>\
         <h2>Events</h2><ol id=\"events\" aria-live=\"polite\"></ol>\
         <h2>Standard output</h2><pre id=\"stdout\"></pre><h2>Standard error</h2><pre id=\"stderr\"></pre>",
        esc(j.service.as_deref().unwrap_or(&j.digest)),
        esc(j.state.as_str()),
        time(j.created_at_ms),
    )
}

pub(super) fn services(list: &[ServiceInfo]) -> String {
    let mut rows = String::new();
    for s in list {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.version,
            s.kind.as_str(),
            esc(&s.digest),
            if s.signed {
                format!(
                    "signed by <span class=\"mono\">{}</span>",
                    esc(s.developer_address.as_deref().unwrap_or(""))
                )
            } else {
                "unsigned".into()
            },
            if s.retired { "retired" } else { "live" },
        );
    }
    format!(
        "<h2>Publish a module</h2>\
         <form id=\"publish\" class=\"stack\">\
         <label for=\"name\">Name</label><input id=\"name\" name=\"name\" required pattern=\"[a-z0-9][a-z0-9._-]*\">\
         <label for=\"kind\">Kind</label><select id=\"kind\" name=\"kind\"><option value=\"command\">command (WASI)</option><option value=\"http\">http (wasi:http)</option></select>\
         <label for=\"module\">Module (.wasm)</label><input id=\"module\" name=\"module\" type=\"file\" accept=\".wasm,.wat\">\
         <button type=\"submit\">Publish</button></form><p id=\"publish-result\" role=\"status\"></p>\
         <h2>Your services</h2><table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\" class=\"num\">Version</th><th scope=\"col\">Kind</th><th scope=\"col\">sha256</th><th scope=\"col\">Signature</th><th scope=\"col\">State</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

pub(super) fn ledger(
    rows: &[LedgerRow],
    audit: &brume_ledger::audit::AuditReport,
    corrupt: usize,
    signed_in: bool,
) -> String {
    let bad = audit.bad_rows();
    let mut out = String::new();
    for r in rows {
        let verdict = if bad.contains(&r.data.work_id.as_str()) {
            "<span class=\"error\">✗ does not verify</span>"
        } else {
            "<span class=\"ok\">✓ verifies</span>"
        };
        let d = &r.data;
        let private = match &r.private {
            Some(p) => format!("<code>{}</code>", esc(&p.request_line)),
            None => "–".into(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\"><a href=\"/console/earnings?account={p}\">{p}</a></td><td class=\"num\">{}</td><td class=\"mono\">{}<br>{verdict}</td><td>{private}</td></tr>",
            esc(&d.work_id),
            time(d.timestamp_ms),
            esc(&d.requester),
            d.token_amount,
            r.row_hash,
            p = esc(&d.provider),
        );
    }
    let note = if signed_in {
        "Your own rows show their private columns (the request line)."
    } else {
        "Public columns only: sign in to see your own rows' private columns."
    };
    let status = if audit.is_clean() && corrupt == 0 {
        format!(
            "<p class=\"ok\" id=\"audit\">Audit: the {} rows below all verify (every row hash recomputed here; aggregate {}).</p>",
            audit.rows, audit.aggregate.0
        )
    } else {
        format!(
            "<p class=\"error\" id=\"audit\" role=\"alert\">Audit: {} of {} rows do not verify, and {corrupt} could not be read.</p>",
            bad.len(),
            audit.rows
        )
    };
    format!(
        "<p>Every use, as a tamper-evident row: its hash covers every column. {note}</p>{status}\
         <table><thead><tr><th scope=\"col\">Work</th><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Requester</th><th scope=\"col\">Provider</th><th scope=\"col\" class=\"num\">Tokens</th><th scope=\"col\">Row hash</th><th scope=\"col\">Private</th></tr></thead>\
         <tbody>{out}</tbody></table>"
    )
}

/// A bar chart of `series` (label, value), as inline SVG.
fn chart(title: &str, series: &BTreeMap<String, u128>) -> String {
    let max = series.values().copied().max().unwrap_or(0).max(1);
    let mut bars = String::new();
    for (i, (label, v)) in series.iter().enumerate() {
        let h = (*v as f64 / max as f64 * 120.0).round();
        let x = 10 + i * 60;
        let _ = write!(
            bars,
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"40\" height=\"{h}\"><title>{}: {v}</title></rect>\
             <text x=\"{x}\" y=\"160\">{}</text>",
            140.0 - h,
            esc(label),
            esc(&label.chars().take(10).collect::<String>())
        );
    }
    let width = 20 + series.len().max(1) * 60;
    format!(
        "<figure><svg class=\"chart\" role=\"img\" aria-label=\"{t}\" width=\"{width}\" height=\"170\">{bars}</svg>\
         <figcaption>{t}</figcaption></figure>",
        t = esc(title)
    )
}

fn table(head: &str, series: &BTreeMap<String, u128>) -> String {
    let mut rows = String::new();
    for (k, v) in series {
        let _ = write!(
            rows,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{v}</td></tr>",
            esc(k)
        );
    }
    format!(
        "<table><thead><tr><th scope=\"col\">{head}</th><th scope=\"col\" class=\"num\">Tokens</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// What an account earned and spent, from its ledger rows.
#[derive(Default)]
pub(super) struct Earnings {
    pub earned_by_day: BTreeMap<String, u128>,
    pub earned_by_service: BTreeMap<String, u128>,
    pub spent_by_provider: BTreeMap<String, u128>,
    pub earned: u128,
    pub spent: u128,
    /// Of the latest rows (at most 200): settled and pending amounts.
    pub settlement_rows: usize,
    pub paid_out: u128,
    pub awaiting_payout: u128,
    pub collected: u128,
    pub awaiting_collection: u128,
    pub settling_txs: Vec<String>,
}

impl Earnings {
    pub(super) fn of(account: &str, rows: &[LedgerRow]) -> Earnings {
        let mut e = Earnings::default();
        for r in rows {
            let d = &r.data;
            for p in d
                .payouts
                .iter()
                .filter(|p| p.beneficiary.eq_ignore_ascii_case(account))
            {
                *e.earned_by_day.entry(day(d.timestamp_ms)).or_default() += p.amount;
                *e.earned_by_service
                    .entry(d.service_digest.chars().take(16).collect())
                    .or_default() += p.amount;
                e.earned += p.amount;
            }
            for p in d
                .payers
                .iter()
                .filter(|p| p.account.eq_ignore_ascii_case(account))
            {
                *e.spent_by_provider.entry(d.provider.clone()).or_default() += p.amount;
                e.spent += p.amount;
            }
        }
        e
    }
}

fn txs(list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let items: String = list
        .iter()
        .take(10)
        .map(|t| format!("<li class=\"mono\">{}</li>", esc(t)))
        .collect();
    format!("<p>Settled by the transactions:</p><ul>{items}</ul>")
}

pub(super) fn earnings(e: &Earnings) -> String {
    format!(
        "<div class=\"cards\"><div class=\"card\"><div class=\"label\">Earned (token base units)</div><div class=\"value\" id=\"earned\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Spent (token base units)</div><div class=\"value\" id=\"spent\">{}</div></div></div>\
         <h2>Settlements</h2><p id=\"settlements\">Of the latest {} rows: {} paid out and {} awaiting payout; {} collected and {} awaiting collection.</p>{}\
         <h2>Earned per day</h2>{}{}<h2>Earned per service</h2>{}<h2>Spent per provider</h2>{}",
        e.earned,
        e.spent,
        e.settlement_rows,
        e.paid_out,
        e.awaiting_payout,
        e.collected,
        e.awaiting_collection,
        txs(&e.settling_txs),
        chart("Earned per day", &e.earned_by_day),
        table("Day (UTC)", &e.earned_by_day),
        table("Service (sha256 prefix)", &e.earned_by_service),
        table("Provider", &e.spent_by_provider),
    )
}

pub(super) fn providers(list: &[ProviderInfo]) -> String {
    let mut rows = String::new();
    for p in list {
        let _ = write!(
            rows,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td></tr>",
            esc(&p.address),
            p.tier,
            esc(&p.region),
            p.claimed_mips,
            p.measured_mips,
            p.reputation.valid,
            p.slots_busy,
            p.slots,
        );
    }
    format!(
        "<table><thead><tr><th scope=\"col\">Address</th><th scope=\"col\" class=\"num\">Tier</th><th scope=\"col\">Region</th>\
         <th scope=\"col\" class=\"num\">Claimed MIPS</th><th scope=\"col\" class=\"num\">Measured MIPS</th><th scope=\"col\" class=\"num\">Valid results</th><th scope=\"col\" class=\"num\">Busy / slots</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

/// What the operator's page shows.
pub(super) struct Operator<'a> {
    pub providers: &'a [ProviderInfo],
    pub standings: &'a [crate::store::providers::TrustInfo],
    pub bans: &'a [crate::store::providers::BanInfo],
    pub health: &'a str,
    pub message: Option<&'a str>,
}

pub(super) fn operator(o: &Operator<'_>, session: &Session) -> String {
    let standing_of = |address: &str| {
        o.standings
            .iter()
            .find(|t| t.address.eq_ignore_ascii_case(address))
            .map_or("not reviewed", |t| t.status.as_str())
    };
    let mut rows = String::new();
    for p in o.providers {
        let _ = write!(
            rows,
            "<tr><td class=\"mono\">{a}</td><td class=\"num\">{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/console/operator/standing\" class=\"inline\">{csrf}\
             <input type=\"hidden\" name=\"address\" value=\"{a}\">\
             <label for=\"reason-{a}\">Reason</label> <input id=\"reason-{a}\" name=\"reason\" value=\"from the console\">\
             <button name=\"action\" value=\"approve\">Approve</button> <button name=\"action\" value=\"suspend\" class=\"secondary\">Suspend</button> \
             <button name=\"action\" value=\"ban\" class=\"secondary\">Ban</button></form></td></tr>",
            p.tier,
            standing_of(&p.address),
            a = esc(&p.address),
            csrf = csrf_field(session),
        );
    }
    let mut bans = String::new();
    for b in o.bans {
        let _ = write!(
            bans,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.address),
            esc(&b.reason),
            if b.has_proof {
                "proof of cheat kept"
            } else {
                "the operator's word"
            },
            time(b.at_ms),
        );
    }
    if bans.is_empty() {
        bans = "<tr><td colspan=\"4\">No bans: no dispute lost, no cheat proved.</td></tr>".into();
    }
    let message = o
        .message
        .map(|m| format!("<p class=\"ok\" role=\"status\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        "{message}<h2>Settlement</h2><pre>{}</pre>\
         <form method=\"post\" action=\"/console/operator/settle\">{}<button type=\"submit\">Settle now</button></form>\
         <h2>Providers connected</h2><table><thead><tr><th scope=\"col\">Address</th><th scope=\"col\" class=\"num\">Tier</th><th scope=\"col\">Standing</th><th scope=\"col\">Change it</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Disputes and bans</h2><p>A provider that loses a dispute, or whose cheat is proved, is banned here.</p>\
         <table><thead><tr><th scope=\"col\">Address</th><th scope=\"col\">Reason</th><th scope=\"col\">Evidence</th><th scope=\"col\">Since (UTC)</th></tr></thead><tbody id=\"bans\">{bans}</tbody></table>",
        esc(o.health),
        csrf_field(session),
    )
}

pub(super) fn forbidden() -> String {
    "<p class=\"error\" role=\"alert\">This page is for the broker's operator: it needs the <code>admin</code> scope.</p>".into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_print_as_the_calendar_has_them() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(1_796_499_618_947), "2026-12-05 19:40:18");
        assert_eq!(super::day(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
