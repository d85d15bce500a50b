//! The settlement store: runs, the transfer journal, carry-overs, deferred
//! rows and flagged accounts, in `settle.db` (SQLite, WAL,
//! `synchronous=FULL`: a journal entry is on disk before its transfer is
//! sent).
//!
//! A [`brume_sqlite::Db`]: writes run on its writer thread, each under its
//! own savepoint (atomic: a failing write leaves nothing), and return once
//! committed; reads run on pooled connections on blocking threads.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use brume_chain::{Address, Anchor, B256};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::{Report, SettleError, Slim, TransferLine};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    settled_rows INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL,
    planned INTEGER NOT NULL DEFAULT 0,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    timings TEXT
);
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    amount TEXT NOT NULL,
    anchor BLOB NOT NULL,
    rows INTEGER NOT NULL,
    carried TEXT NOT NULL,
    state TEXT NOT NULL,
    tx_hash TEXT,
    error TEXT,
    chain_anchor BLOB
);
CREATE INDEX IF NOT EXISTS intents_by_run ON intents(run, kind, account);
CREATE TABLE IF NOT EXISTS carry (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    account TEXT NOT NULL,
    amount TEXT NOT NULL,
    aggregate BLOB NOT NULL,
    rows INTEGER NOT NULL,
    reason TEXT NOT NULL,
    paid_intent INTEGER
);
CREATE INDEX IF NOT EXISTS carry_unpaid ON carry(paid_intent, account);
CREATE TABLE IF NOT EXISTS deferred (
    seq INTEGER PRIMARY KEY,
    row TEXT NOT NULL,
    since_run INTEGER NOT NULL,
    in_run INTEGER
);
CREATE TABLE IF NOT EXISTS late (seq INTEGER PRIMARY KEY, run INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held_log (
    seq INTEGER NOT NULL,
    intent INTEGER NOT NULL,
    PRIMARY KEY (seq, intent)
);
CREATE TABLE IF NOT EXISTS flagged (
    account TEXT NOT NULL,
    run INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (account, run)
);
-- The entities of the rows a run completed, until the ledger's status
-- column says how each was settled (`zero`: a part of amount 0).
CREATE TABLE IF NOT EXISTS marks (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    work_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    role TEXT NOT NULL,
    zero INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_by_run ON marks(run, role, entity);
CREATE TABLE IF NOT EXISTS marked_runs (run INTEGER PRIMARY KEY);
";

/// A run's identity and range of ledger sequence numbers `(from, to]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub id: i64,
    pub from_seq: u64,
    pub to_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Collect,
    Payout,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Collect => "collect",
            Kind::Payout => "payout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Done,
    Failed,
}

impl State {
    fn parse(s: &str) -> State {
        match s {
            "done" => State::Done,
            "failed" => State::Failed,
            _ => State::Pending,
        }
    }
}

pub(crate) struct NewIntent {
    pub kind: Kind,
    pub account: String,
    pub address: Address,
    pub amount: u128,
    pub anchor: Anchor,
    pub rows: u64,
    /// Carry entries this payout pays.
    pub carried: Vec<i64>,
    /// The anchor the chain holds, if not `anchor`: a payout's batch.
    pub chain_anchor: Option<Anchor>,
}

#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub id: i64,
    pub account: String,
    pub address: Address,
    pub amount: u128,
    /// The XOR aggregate of the rows it settles.
    pub anchor: Anchor,
    /// The anchor on the chain: `anchor` for a collection, its batch's
    /// for a payout.
    pub chain_anchor: Anchor,
    pub rows: u64,
    pub carried: Vec<i64>,
    pub state: State,
    pub tx_hash: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Carry {
    pub id: i64,
    pub account: String,
    pub amount: u128,
    pub aggregate: [u8; 32],
    pub rows: u64,
    pub reason: String,
}

/// A transfer settlement sent and saw land.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub run: u64,
    /// `collect` or `payout`.
    pub kind: String,
    pub account: String,
    pub address: String,
    pub amount: String,
    pub anchor: String,
    pub rows: u64,
    pub tx_hash: String,
}

/// One entity's settlement status in one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowStatus {
    pub account: String,
    /// `payer` or `beneficiary`.
    pub role: String,
    /// `unsettled`, `deferred`, `held`, `collected`, `carried` or `paid`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
}

pub(crate) struct Sums {
    pub collected: u128,
    pub paid: u128,
    pub carry: u128,
    pub held: u128,
}

/// The store; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    db: brume_sqlite::Db,
}

impl Db {
    /// Opens (creating if needed) `dir/settle.db`. Blocking.
    pub fn open(dir: &Path) -> Result<Db, SettleError> {
        let path = dir.join("settle.db");
        let wrap = |e: &dyn std::fmt::Display| SettleError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| wrap(&e))?;
        let options = brume_sqlite::Options::new();
        let conn = brume_sqlite::open(&path, &options).map_err(|e| wrap(&e.source))?;
        conn.execute_batch(SCHEMA).map_err(|e| wrap(&e))?;
        migrate(&conn).map_err(|e| wrap(&e))?;
        let db = brume_sqlite::Db::start("brume-settle-writer", conn, &path, &options)
            .map_err(|e| wrap(&e))?;
        Ok(Db { db })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Runs `f` on a blocking thread with a reader connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SettleError> + Send + 'static,
    ) -> Result<T, SettleError> {
        self.db.read(f).await
    }

    /// Runs `f` on the writer thread, atomically (under its own
    /// savepoint), and returns once it is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, SettleError> + Send + 'static,
    ) -> Result<T, SettleError> {
        self.db.write(f).await
    }
}

/// Stores made before payouts were batched lack `intents.chain_anchor`.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has: bool = c
        .prepare("SELECT 1 FROM pragma_table_info('intents') WHERE name = 'chain_anchor'")?
        .exists([])?;
    if !has {
        c.execute_batch("ALTER TABLE intents ADD COLUMN chain_anchor BLOB")?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn u128_of(s: &str) -> Result<u128, SettleError> {
    s.parse()
        .map_err(|_| SettleError::Db(format!("{s:?} is not an amount")))
}

fn hash32(b: &[u8]) -> Result<[u8; 32], SettleError> {
    b.try_into()
        .map_err(|_| SettleError::Db("a stored hash is not 32 bytes".into()))
}

fn json<T: Serialize>(v: &T) -> Result<String, SettleError> {
    serde_json::to_string(v).map_err(|e| SettleError::Db(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, SettleError> {
    serde_json::from_str(s).map_err(|e| SettleError::Db(format!("stored JSON: {e}")))
}

pub(crate) fn baseline(c: &Connection) -> Result<Option<u128>, SettleError> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = 'baseline'", [], |r| {
            r.get(0)
        })
        .optional()?;
    v.map(|s| u128_of(&s)).transpose()
}

pub(crate) fn set_baseline(tx: &Transaction<'_>, b: u128) -> Result<(), SettleError> {
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('baseline', ?1)",
        params![b.to_string()],
    )?;
    Ok(())
}

pub(crate) fn unfinished(c: &Connection) -> Result<Option<Run>, SettleError> {
    Ok(c.query_row(
        "SELECT id, from_seq, to_seq FROM runs WHERE phase != 'done' ORDER BY id LIMIT 1",
        [],
        |r| {
            Ok(Run {
                id: r.get(0)?,
                from_seq: r.get::<_, i64>(1)? as u64,
                to_seq: r.get::<_, i64>(2)? as u64,
            })
        },
    )
    .optional()?)
}

pub(crate) fn last_seq(c: &Connection) -> Result<u64, SettleError> {
    let v: Option<i64> = c.query_row("SELECT MAX(to_seq) FROM runs", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0) as u64)
}

fn slims(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Slim>, SettleError> {
    let mut stmt = c.prepare(sql)?;
    let rows: Vec<String> = stmt.query_map(p, |r| r.get(0))?.collect::<Result<_, _>>()?;
    rows.iter().map(|s| from_json(s)).collect()
}

pub(crate) fn deferred_rows(c: &Connection) -> Result<Vec<Slim>, SettleError> {
    slims(c, "SELECT row FROM deferred ORDER BY seq", [])
}

pub(crate) fn deferred_rows_of_run(c: &Connection, run: i64) -> Result<Vec<Slim>, SettleError> {
    slims(
        c,
        "SELECT row FROM deferred WHERE in_run = ?1 ORDER BY seq",
        params![run],
    )
}

pub(crate) fn deferred_seqs_of_run(
    c: &Connection,
    run: i64,
) -> Result<(HashSet<u64>, HashSet<u64>), SettleError> {
    let mut included = HashSet::new();
    let mut blocked = HashSet::new();
    let mut stmt = c.prepare("SELECT seq, since_run, in_run FROM deferred")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (seq, since, in_run) = row?;
        if in_run == Some(run) {
            included.insert(seq);
        } else if since == run && in_run.is_none() {
            blocked.insert(seq);
        }
    }
    Ok((included, blocked))
}

fn insert_intent(tx: &Transaction<'_>, run: i64, i: &NewIntent) -> Result<(), SettleError> {
    tx.execute(
        "INSERT INTO intents (run, kind, account, address, amount, anchor, rows, carried, state, chain_anchor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        params![
            run,
            i.kind.as_str(),
            i.account,
            i.address.to_string(),
            i.amount.to_string(),
            i.anchor.as_slice(),
            i.rows as i64,
            json(&i.carried)?,
            i.chain_anchor.as_ref().map(|a| a.as_slice()),
        ],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn start_run(
    tx: &Transaction<'_>,
    from: u64,
    to: u64,
    rows: u64,
    intents: &[NewIntent],
    newly_deferred: &[Slim],
    included: &[u64],
    flagged: &[(String, String)],
) -> Result<Run, SettleError> {
    tx.execute(
        "INSERT INTO runs (from_seq, to_seq, rows, phase, started_ms) VALUES (?1, ?2, ?3, 'collecting', ?4)",
        params![from as i64, to as i64, rows as i64, now_ms()],
    )?;
    let run = tx.last_insert_rowid();
    for i in intents {
        insert_intent(tx, run, i)?;
    }
    for r in newly_deferred {
        tx.execute(
            "INSERT OR REPLACE INTO deferred (seq, row, since_run, in_run) VALUES (?1, ?2, ?3, NULL)",
            params![r.seq as i64, json(r)?, run],
        )?;
    }
    for seq in included {
        tx.execute(
            "UPDATE deferred SET in_run = ?1 WHERE seq = ?2",
            params![run, *seq as i64],
        )?;
    }
    for (account, reason) in flagged {
        tx.execute(
            "INSERT OR REPLACE INTO flagged (account, run, reason) VALUES (?1, ?2, ?3)",
            params![account, run, reason],
        )?;
    }
    Ok(Run {
        id: run,
        from_seq: from,
        to_seq: to,
    })
}

/// An intent's columns as stored.
struct RawIntent {
    id: i64,
    account: String,
    address: String,
    amount: String,
    anchor: Vec<u8>,
    rows: i64,
    carried: String,
    state: String,
    tx_hash: Option<String>,
    error: Option<String>,
    chain_anchor: Option<Vec<u8>>,
}

fn read_intent(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawIntent> {
    Ok(RawIntent {
        id: r.get(0)?,
        account: r.get(1)?,
        address: r.get(2)?,
        amount: r.get(3)?,
        anchor: r.get(4)?,
        rows: r.get(5)?,
        carried: r.get(6)?,
        state: r.get(7)?,
        tx_hash: r.get(8)?,
        error: r.get(9)?,
        chain_anchor: r.get(10)?,
    })
}

pub(crate) fn intents(c: &Connection, run: i64, kind: Kind) -> Result<Vec<Intent>, SettleError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, account, address, amount, anchor, rows, carried, state, tx_hash, error,
            chain_anchor
         FROM intents WHERE run = ?1 AND kind = ?2 ORDER BY id",
    )?;
    let raw: Vec<_> = stmt
        .query_map(params![run, kind.as_str()], read_intent)?
        .collect::<Result<_, _>>()?;
    raw.into_iter()
        .map(|r| {
            let anchor = B256::from(hash32(&r.anchor)?);
            Ok(Intent {
                id: r.id,
                address: r
                    .address
                    .parse()
                    .map_err(|_| SettleError::Db(format!("{:?} is not an address", r.address)))?,
                account: r.account,
                amount: u128_of(&r.amount)?,
                anchor,
                chain_anchor: match r.chain_anchor {
                    Some(a) => B256::from(hash32(&a)?),
                    None => anchor,
                },
                rows: r.rows as u64,
                carried: from_json(&r.carried)?,
                state: State::parse(&r.state),
                tx_hash: r.tx_hash,
                error: r.error,
            })
        })
        .collect()
}

pub(crate) fn resolve_intents(
    tx: &Transaction<'_>,
    run: i64,
    kind: Kind,
    outcomes: &[(i64, Result<B256, String>)],
) -> Result<(), SettleError> {
    let all = intents(tx, run, kind)?;
    let by_id: HashMap<i64, &Intent> = all.iter().map(|i| (i.id, i)).collect();
    for (id, outcome) in outcomes {
        let Some(i) = by_id.get(id) else { continue };
        match outcome {
            Ok(hash) => {
                tx.execute(
                    "UPDATE intents SET state = 'done', tx_hash = ?1 WHERE id = ?2",
                    params![hash.to_string(), id],
                )?;
                if kind == Kind::Payout {
                    for carry in &i.carried {
                        tx.execute(
                            "UPDATE carry SET paid_intent = ?1 WHERE id = ?2",
                            params![id, carry],
                        )?;
                    }
                }
            }
            Err(e) => {
                tx.execute(
                    "UPDATE intents SET state = 'failed', error = ?1 WHERE id = ?2",
                    params![e, id],
                )?;
                match kind {
                    Kind::Collect => {
                        tx.execute(
                            "INSERT OR REPLACE INTO flagged (account, run, reason) VALUES (?1, ?2, ?3)",
                            params![i.account, run, e],
                        )?;
                    }
                    Kind::Payout => {
                        // What this run owed stays owed: carry it (the
                        // earlier carry entries it included stay unpaid).
                        let mut amount = i.amount;
                        let mut rows = i.rows;
                        let mut agg = brume_ledger::row::Aggregate::new();
                        agg.add(&i.anchor.0);
                        for carry in &i.carried {
                            let (a, g, n): (String, Vec<u8>, i64) = tx.query_row(
                                "SELECT amount, aggregate, rows FROM carry WHERE id = ?1",
                                params![carry],
                                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                            )?;
                            amount -= u128_of(&a)?;
                            rows -= n as u64;
                            agg.add(&hash32(&g)?);
                        }
                        tx.execute(
                            "INSERT INTO carry (run, account, amount, aggregate, rows, reason)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![
                                run,
                                i.account,
                                amount.to_string(),
                                &agg.0.0[..],
                                rows as i64,
                                format!("payout failed: {e}")
                            ],
                        )?;
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn payouts_planned(c: &Connection, run: i64) -> Result<bool, SettleError> {
    let v: i64 = c.query_row(
        "SELECT planned FROM runs WHERE id = ?1",
        params![run],
        |r| r.get(0),
    )?;
    Ok(v != 0)
}

pub(crate) fn unpaid_carry(c: &Connection) -> Result<Vec<Carry>, SettleError> {
    let mut stmt = c.prepare(
        "SELECT id, account, amount, aggregate, rows, reason FROM carry WHERE paid_intent IS NULL ORDER BY id",
    )?;
    let raw: Vec<(i64, String, String, Vec<u8>, i64, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    raw.into_iter()
        .map(|(id, account, amount, aggregate, rows, reason)| {
            Ok(Carry {
                id,
                account,
                amount: u128_of(&amount)?,
                aggregate: hash32(&aggregate)?,
                rows: rows as u64,
                reason,
            })
        })
        .collect()
}

/// What a run's payout planning decided (see `Settler::plan_payouts`).
#[derive(Clone, Copy)]
pub(crate) struct Planned<'a> {
    pub intents: &'a [NewIntent],
    pub carry: &'a [Carry],
    /// Rows that still wait (a collection failed).
    pub deferred: &'a [Slim],
    /// Earlier deferred rows this run completed.
    pub done_deferred: &'a [u64],
    /// Every row this run completed.
    pub complete: &'a [Slim],
    /// Beneficiaries that are not addresses, and why: flagged.
    pub unpayable: &'a [(String, String)],
}

pub(crate) fn plan_payouts(
    tx: &Transaction<'_>,
    run: i64,
    p: Planned<'_>,
) -> Result<(), SettleError> {
    let Planned {
        intents,
        carry,
        deferred,
        done_deferred,
        complete,
        unpayable,
    } = p;
    for (account, reason) in unpayable {
        tx.execute(
            "INSERT OR REPLACE INTO flagged (account, run, reason) VALUES (?1, ?2, ?3)",
            params![account, run, reason],
        )?;
    }
    for i in intents {
        insert_intent(tx, run, i)?;
    }
    let mut mark = tx.prepare_cached(
        "INSERT INTO marks (run, seq, work_id, entity, role, zero) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in complete {
        let seq = r.seq as i64;
        for p in &r.parts {
            mark.execute(params![
                run,
                seq,
                r.work_id,
                p.account,
                "payer",
                p.amount == 0
            ])?;
        }
        for (b, amount) in &r.payouts {
            mark.execute(params![run, seq, r.work_id, b, "beneficiary", *amount == 0])?;
        }
    }
    drop(mark);
    let settled_rows = complete.len() as u64;
    for k in carry {
        tx.execute(
            "INSERT INTO carry (run, account, amount, aggregate, rows, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run, k.account, k.amount.to_string(), &k.aggregate[..], k.rows as i64, k.reason],
        )?;
    }
    let mine: HashSet<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM intents WHERE run = ?1 AND kind = 'collect'")?;
        stmt.query_map(params![run], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for r in deferred {
        tx.execute(
            "INSERT INTO deferred (seq, row, since_run, in_run) VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT (seq) DO UPDATE SET row = excluded.row, in_run = NULL",
            params![r.seq as i64, json(r)?, run],
        )?;
        for id in r.parts.iter().filter_map(|p| p.collected) {
            if mine.contains(&id) {
                tx.execute(
                    "INSERT OR IGNORE INTO held_log (seq, intent) VALUES (?1, ?2)",
                    params![r.seq as i64, id],
                )?;
            }
        }
    }
    for seq in done_deferred {
        tx.execute("DELETE FROM deferred WHERE seq = ?1", params![*seq as i64])?;
        tx.execute(
            "INSERT OR REPLACE INTO late (seq, run) VALUES (?1, ?2)",
            params![*seq as i64, run],
        )?;
    }
    tx.execute(
        "UPDATE runs SET planned = 1, phase = 'paying', settled_rows = ?2 WHERE id = ?1",
        params![run, settled_rows as i64],
    )?;
    Ok(())
}

pub(crate) fn finish_run(tx: &Transaction<'_>, run: i64, timings: &str) -> Result<(), SettleError> {
    tx.execute(
        "UPDATE runs SET phase = 'done', finished_ms = ?2, timings = ?3 WHERE id = ?1",
        params![run, now_ms(), timings],
    )?;
    Ok(())
}

fn lines(c: &Connection, run: i64, kind: Kind) -> Result<Vec<TransferLine>, SettleError> {
    Ok(intents(c, run, kind)?
        .into_iter()
        .map(|i| TransferLine {
            account: i.account,
            address: i.address.to_string(),
            amount: i.amount,
            rows: i.rows,
            anchor: i.chain_anchor.to_string(),
            state: match i.state {
                State::Done => "done",
                State::Failed => "failed",
                State::Pending => "pending",
            }
            .into(),
            tx_hash: i.tx_hash,
            error: i.error,
        })
        .collect())
}

pub(crate) fn report(c: &Connection, run: i64) -> Result<Option<Report>, SettleError> {
    let Some((rows, settled, timings)) = c
        .query_row(
            "SELECT rows, settled_rows, timings FROM runs WHERE id = ?1",
            params![run],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let collections = lines(c, run, Kind::Collect)?;
    let payouts = lines(c, run, Kind::Payout)?;
    let mut stmt =
        c.prepare("SELECT account, reason FROM flagged WHERE run = ?1 ORDER BY account")?;
    let flagged: Vec<(String, String)> = stmt
        .query_map(params![run], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let done = |l: &&TransferLine| l.state == "done";
    let s = sums(c)?;
    let deferred: i64 = c.query_row("SELECT COUNT(*) FROM deferred", [], |r| r.get(0))?;
    Ok(Some(Report {
        run: run as u64,
        rows: rows as u64,
        rows_settled: settled as u64,
        rows_deferred: deferred as u64,
        collected: collections.iter().filter(done).map(|l| l.amount).sum(),
        paid: payouts.iter().filter(done).map(|l| l.amount).sum(),
        collections,
        payouts,
        flagged,
        carry_over: s.carry,
        held: s.held,
        timings: timings
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        ..Report::default()
    }))
}

pub(crate) fn last_report(c: &Connection) -> Result<Option<Report>, SettleError> {
    let run: Option<i64> = c
        .query_row(
            "SELECT id FROM runs WHERE phase = 'done' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match run {
        Some(run) => report(c, run),
        None => Ok(None),
    }
}

pub(crate) fn carry_total(c: &Connection) -> Result<u128, SettleError> {
    Ok(unpaid_carry(c)?.iter().map(|k| k.amount).sum())
}

fn held(c: &Connection) -> Result<u128, SettleError> {
    Ok(deferred_rows(c)?
        .iter()
        .flat_map(|r| r.parts.iter())
        .filter(|p| p.collected.is_some())
        .map(|p| p.amount)
        .sum())
}

pub(crate) fn sums(c: &Connection) -> Result<Sums, SettleError> {
    let total = |kind: &str| -> Result<u128, SettleError> {
        let mut stmt =
            c.prepare_cached("SELECT amount FROM intents WHERE kind = ?1 AND state = 'done'")?;
        let v: Vec<String> = stmt
            .query_map(params![kind], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        v.iter().map(|s| u128_of(s)).sum()
    };
    let collected = total("collect")?;
    let paid = total("payout")?;
    Ok(Sums {
        collected,
        paid,
        carry: carry_total(c)?,
        held: held(c)?,
    })
}

pub(crate) fn deferred_by_payer(c: &Connection) -> Result<HashMap<String, u128>, SettleError> {
    let mut out = HashMap::new();
    for r in deferred_rows(c)? {
        for p in r.parts.iter().filter(|p| p.collected.is_none()) {
            *out.entry(p.account.clone()).or_default() += p.amount;
        }
    }
    Ok(out)
}

pub(crate) fn collected_by_payer(c: &Connection) -> Result<HashMap<String, u128>, SettleError> {
    let mut stmt =
        c.prepare("SELECT account, amount FROM intents WHERE kind = 'collect' AND state = 'done'")?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out: HashMap<String, u128> = HashMap::new();
    for (account, amount) in rows {
        *out.entry(account).or_default() += u128_of(&amount)?;
    }
    Ok(out)
}

pub(crate) fn sent(c: &Connection) -> Result<Vec<Sent>, SettleError> {
    let mut stmt = c.prepare(
        "SELECT run, kind, account, address, amount, COALESCE(chain_anchor, anchor), rows,
            tx_hash FROM intents WHERE state = 'done' ORDER BY id",
    )?;
    let v = stmt
        .query_map([], |r| {
            Ok(Sent {
                run: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                account: r.get(2)?,
                address: r.get(3)?,
                amount: r.get(4)?,
                anchor: B256::from_slice(&r.get::<_, Vec<u8>>(5)?).to_string(),
                rows: r.get::<_, i64>(6)? as u64,
                tx_hash: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// The status of each of a row's payers and beneficiaries.
pub(crate) fn row_status(
    c: &Connection,
    seq: u64,
    payers: &[String],
    beneficiaries: &[String],
) -> Result<Vec<RowStatus>, SettleError> {
    let status = |account: &str, role: &str, status: &str, tx: Option<String>| RowStatus {
        account: account.to_string(),
        role: role.into(),
        status: status.into(),
        tx_hash: tx,
    };
    let deferred: Option<String> = c
        .query_row(
            "SELECT row FROM deferred WHERE seq = ?1",
            params![seq as i64],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(row) = deferred {
        let row: Slim = from_json(&row)?;
        let mut out = Vec::new();
        for p in &row.parts {
            let tx = match p.collected {
                Some(id) => c
                    .query_row(
                        "SELECT tx_hash FROM intents WHERE id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?
                    .flatten(),
                None => None,
            };
            out.push(status(
                &p.account,
                "payer",
                if tx.is_some() { "held" } else { "deferred" },
                tx,
            ));
        }
        for b in beneficiaries {
            out.push(status(b, "beneficiary", "unsettled", None));
        }
        return Ok(out);
    }
    let late: Option<i64> = c
        .query_row(
            "SELECT run FROM late WHERE seq = ?1",
            params![seq as i64],
            |r| r.get(0),
        )
        .optional()?;
    let run: Option<i64> = match late {
        Some(r) => Some(r),
        None => c
            .query_row(
                "SELECT id FROM runs WHERE from_seq < ?1 AND to_seq >= ?1 AND phase = 'done'",
                params![seq as i64],
                |r| r.get(0),
            )
            .optional()?,
    };
    let Some(run) = run else {
        return Ok(payers
            .iter()
            .map(|p| status(p, "payer", "unsettled", None))
            .chain(
                beneficiaries
                    .iter()
                    .map(|b| status(b, "beneficiary", "unsettled", None)),
            )
            .collect());
    };
    let mut out = Vec::new();
    let done_tx = |c: &Connection,
                   kind: &str,
                   account: &str|
     -> Result<Option<String>, SettleError> {
        Ok(c.query_row(
            "SELECT tx_hash FROM intents WHERE run = ?1 AND kind = ?2 AND account = ?3 AND state = 'done'",
            params![run, kind, account],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
    };
    for p in payers {
        let tx = done_tx(c, "collect", p)?;
        out.push(status(
            p,
            "payer",
            if tx.is_some() {
                "collected"
            } else {
                "unsettled"
            },
            tx,
        ));
    }
    for b in beneficiaries {
        if let Some(tx) = done_tx(c, "payout", b)? {
            out.push(status(b, "beneficiary", "paid", Some(tx)));
            continue;
        }
        let carried: Option<Option<i64>> = c
            .query_row(
                "SELECT paid_intent FROM carry WHERE run = ?1 AND account = ?2",
                params![run, b],
                |r| r.get(0),
            )
            .optional()?;
        match carried {
            Some(Some(intent)) => {
                let tx: Option<String> = c
                    .query_row(
                        "SELECT tx_hash FROM intents WHERE id = ?1",
                        params![intent],
                        |r| r.get(0),
                    )
                    .optional()?
                    .flatten();
                out.push(status(b, "beneficiary", "paid", tx));
            }
            Some(None) => out.push(status(b, "beneficiary", "carried", None)),
            None => out.push(status(b, "beneficiary", "unsettled", None)),
        }
    }
    Ok(out)
}

/// Finished runs whose rows' statuses are not yet in the ledger.
pub(crate) fn unmarked_runs(c: &Connection) -> Result<Vec<i64>, SettleError> {
    let mut stmt = c.prepare(
        "SELECT id FROM runs WHERE phase = 'done'
         AND id NOT IN (SELECT run FROM marked_runs) ORDER BY id",
    )?;
    let v = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// What a finished run settled, as updates of the ledger's status column:
/// the payers of the rows it completed `collected` (with the collection's
/// transaction: this run's, or an earlier one's that held the part), their
/// beneficiaries `paid` (with this run's payout), and the beneficiaries of
/// earlier rows whose carried-over amounts this run paid. A beneficiary
/// carried over stays `pending` until a later run pays it. An entity that
/// both pays and receives in a row ends `paid`.
pub(crate) fn status_updates(
    c: &Connection,
    run: i64,
) -> Result<Vec<brume_ledger::store::StatusUpdate>, SettleError> {
    use brume_ledger::store::{PaymentStatus, StatusUpdate};
    let mut groups: std::collections::BTreeMap<
        (String, &'static str, Option<String>),
        Vec<String>,
    > = std::collections::BTreeMap::new();
    let mut add = |entity: String, status: &'static str, tx: Option<String>, work_id: String| {
        groups
            .entry((entity, status, tx))
            .or_default()
            .push(work_id);
    };
    let mut payers = c.prepare(
        "SELECT m.work_id, m.entity,
            (SELECT tx_hash FROM intents i WHERE i.run = m.run AND i.kind = 'collect'
                AND i.account = m.entity AND i.state = 'done'),
            (SELECT i.tx_hash FROM held_log h JOIN intents i ON i.id = h.intent
                WHERE h.seq = m.seq AND i.account = m.entity AND i.state = 'done')
         FROM marks m WHERE m.run = ?1 AND m.role = 'payer'",
    )?;
    let rows = payers.query_map(params![run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        let (work_id, entity, now, held) = row?;
        add(entity, "collected", held.or(now), work_id);
    }
    let mut beneficiaries = c.prepare(
        "SELECT m.work_id, m.entity, m.zero,
            (SELECT tx_hash FROM intents i WHERE i.run = m.run AND i.kind = 'payout'
                AND i.account = m.entity AND i.state = 'done')
         FROM marks m WHERE m.run = ?1 AND m.role = 'beneficiary'",
    )?;
    let rows = beneficiaries.query_map(params![run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        match row? {
            (work_id, entity, _, Some(tx)) => add(entity, "paid", Some(tx), work_id),
            (work_id, entity, true, None) => add(entity, "paid", None, work_id),
            _ => {} // carried over
        }
    }
    let mut carried = c.prepare(
        "SELECT m.work_id, m.entity, i.tx_hash
         FROM carry k JOIN intents i ON i.id = k.paid_intent
         JOIN marks m ON m.run = k.run AND m.entity = k.account AND m.role = 'beneficiary'
         WHERE i.run = ?1 AND i.state = 'done' AND m.zero = 0",
    )?;
    let rows = carried.query_map(params![run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (work_id, entity, tx) = row?;
        add(entity, "paid", tx, work_id);
    }
    // Parts this run collected of rows it had to defer (another payer
    // could not pay): held, but collected, and in this collection's anchor.
    let mut held = c.prepare(
        "SELECT d.row, i.account, i.tx_hash FROM held_log h
         JOIN intents i ON i.id = h.intent JOIN deferred d ON d.seq = h.seq
         WHERE i.run = ?1 AND i.state = 'done'",
    )?;
    let rows = held.query_map(params![run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (slim, entity, tx) = row?;
        let slim: Slim = from_json(&slim)?;
        add(entity, "collected", tx, slim.work_id);
    }
    // `collected` before `paid`: an entity that pays and receives in one
    // row (a requester's refund) ends `paid`.
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|((_, status, _), _)| *status != "collected");
    Ok(groups
        .into_iter()
        .map(|((entity, status, settling_tx), mut work_ids)| {
            work_ids.sort();
            work_ids.dedup();
            StatusUpdate {
                work_ids,
                entity,
                status: if status == "paid" {
                    PaymentStatus::Paid
                } else {
                    PaymentStatus::Collected
                },
                settling_tx,
            }
        })
        .collect())
}

/// Records that a run's statuses are in the ledger, and forgets the marks
/// no later run needs: all but those of beneficiaries still carried over.
pub(crate) fn marked(tx: &Transaction<'_>, run: i64) -> Result<(), SettleError> {
    tx.execute(
        "INSERT OR IGNORE INTO marked_runs (run) VALUES (?1)",
        params![run],
    )?;
    tx.execute(
        "DELETE FROM marks WHERE run = ?1 AND NOT (role = 'beneficiary' AND zero = 0
            AND EXISTS (SELECT 1 FROM carry k WHERE k.run = marks.run
                AND k.account = marks.entity AND k.paid_intent IS NULL))",
        params![run],
    )?;
    // Carries this run paid: their earlier runs' marks are done with.
    tx.execute(
        "DELETE FROM marks WHERE role = 'beneficiary' AND EXISTS (
            SELECT 1 FROM carry k JOIN intents i ON i.id = k.paid_intent
            WHERE i.run = ?1 AND k.run = marks.run AND k.account = marks.entity)",
        params![run],
    )?;
    Ok(())
}
