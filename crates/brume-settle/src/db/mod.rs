//! The settlement store: runs, the transfer journal, carry-overs, deferred
//! rows and flagged accounts. Its functions run on any [`Sql`] (SQLite or
//! PostgreSQL, see [`brume_sql`]), inside the transaction their caller
//! opened.
//!
//! [`Db`] is the SQLite journal, `settle.db` (WAL, `synchronous=FULL`: a
//! journal entry is on disk before its transfer is sent), a
//! [`brume_sqlite::Db`]: writes run on its writer thread, each under its
//! own savepoint (atomic: a failing write leaves nothing), and return once
//! committed; reads run on pooled connections on blocking threads.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use brume_chain::{Address, Anchor, B256};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::{Report, SettleError, Slim, TransferLine};

mod status;
use brume_sql::{Lite, Sql, V};
pub(crate) use status::{marked, row_status, status_updates, unmarked_runs};

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
    pub(crate) fn as_str(self) -> &'static str {
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
        f: impl FnOnce(&mut dyn Sql) -> Result<T, SettleError> + Send + 'static,
    ) -> Result<T, SettleError> {
        self.db.read(move |c| f(&mut Lite(c))).await
    }

    /// Runs `f` on the writer thread, atomically (under its own
    /// savepoint), and returns once it is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, SettleError> + Send + 'static,
    ) -> Result<T, SettleError> {
        self.db.write(move |tx| f(&mut Lite(tx))).await
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

/// Sequence numbers and counts are stored as signed 64-bit integers.
fn i(v: u64) -> V<'static> {
    V::I(v as i64)
}

/// The first column of every row, as text.
fn texts(c: &mut dyn Sql, sql: &str, p: &[V<'_>]) -> Result<Vec<String>, SettleError> {
    Ok(c.query(sql, p)?
        .iter()
        .map(|r| r.t(0))
        .collect::<Result<_, _>>()?)
}

/// The first column of the first row, as text, if there is one.
fn text(c: &mut dyn Sql, sql: &str, p: &[V<'_>]) -> Result<Option<String>, SettleError> {
    Ok(c.one(sql, p)?.map(|r| r.ot(0)).transpose()?.flatten())
}

/// The first column of the first row, as an integer, if there is one.
fn int(c: &mut dyn Sql, sql: &str, p: &[V<'_>]) -> Result<Option<i64>, SettleError> {
    Ok(c.one(sql, p)?.map(|r| r.oi(0)).transpose()?.flatten())
}

pub(crate) fn baseline(c: &mut dyn Sql) -> Result<Option<u128>, SettleError> {
    text(c, "SELECT value FROM meta WHERE key = 'baseline'", &[])?
        .map(|s| u128_of(&s))
        .transpose()
}

pub(crate) fn set_baseline(c: &mut dyn Sql, b: u128) -> Result<(), SettleError> {
    c.exec(
        "INSERT INTO meta (key, value) VALUES ('baseline', ?1) ON CONFLICT (key) DO NOTHING",
        &[V::T(&b.to_string())],
    )?;
    Ok(())
}

pub(crate) fn unfinished(c: &mut dyn Sql) -> Result<Option<Run>, SettleError> {
    c.one(
        "SELECT id, from_seq, to_seq FROM runs WHERE phase != 'done' ORDER BY id LIMIT 1",
        &[],
    )?
    .map(|r| {
        Ok(Run {
            id: r.i(0)?,
            from_seq: r.i(1)? as u64,
            to_seq: r.i(2)? as u64,
        })
    })
    .transpose()
}

pub(crate) fn last_seq(c: &mut dyn Sql) -> Result<u64, SettleError> {
    Ok(int(c, "SELECT MAX(to_seq) FROM runs", &[])?.unwrap_or(0) as u64)
}

fn slims(c: &mut dyn Sql, sql: &str, p: &[V<'_>]) -> Result<Vec<Slim>, SettleError> {
    texts(c, sql, p)?.iter().map(|s| from_json(s)).collect()
}

pub(crate) fn deferred_rows(c: &mut dyn Sql) -> Result<Vec<Slim>, SettleError> {
    slims(c, "SELECT row FROM deferred ORDER BY seq", &[])
}

pub(crate) fn deferred_rows_of_run(c: &mut dyn Sql, run: i64) -> Result<Vec<Slim>, SettleError> {
    slims(
        c,
        "SELECT row FROM deferred WHERE in_run = ?1 ORDER BY seq",
        &[V::I(run)],
    )
}

pub(crate) fn deferred_seqs_of_run(
    c: &mut dyn Sql,
    run: i64,
) -> Result<(HashSet<u64>, HashSet<u64>), SettleError> {
    let mut included = HashSet::new();
    let mut blocked = HashSet::new();
    for r in c.query("SELECT seq, since_run, in_run FROM deferred", &[])? {
        let (seq, since, in_run) = (r.i(0)? as u64, r.i(1)?, r.oi(2)?);
        if in_run == Some(run) {
            included.insert(seq);
        } else if since == run && in_run.is_none() {
            blocked.insert(seq);
        }
    }
    Ok((included, blocked))
}

fn insert_intent(c: &mut dyn Sql, run: i64, i: &NewIntent) -> Result<(), SettleError> {
    c.exec(
        "INSERT INTO intents (run, kind, account, address, amount, anchor, rows, carried, state, chain_anchor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        &[
            V::I(run),
            V::T(i.kind.as_str()),
            V::T(&i.account),
            V::T(&i.address.to_string()),
            V::T(&i.amount.to_string()),
            V::B(i.anchor.as_slice()),
            self::i(i.rows),
            V::T(&json(&i.carried)?),
            i.chain_anchor.as_ref().map(|a| a.as_slice()).into(),
        ],
    )?;
    Ok(())
}

/// Flags `account` in `run`, with `reason` (the last one given wins).
fn flag(c: &mut dyn Sql, account: &str, run: i64, reason: &str) -> Result<(), SettleError> {
    c.exec(
        "INSERT INTO flagged (account, run, reason) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, run) DO UPDATE SET reason = excluded.reason",
        &[V::T(account), V::I(run), V::T(reason)],
    )?;
    Ok(())
}

pub(crate) fn start_run(c: &mut dyn Sql, r: &NewRun) -> Result<Run, SettleError> {
    let (from, to) = (r.from, r.to);
    let run = int(
        c,
        "INSERT INTO runs (from_seq, to_seq, rows, phase, started_ms)
         VALUES (?1, ?2, ?3, 'collecting', ?4) RETURNING id",
        &[i(from), i(to), i(r.rows), V::I(now_ms())],
    )?
    .ok_or_else(|| SettleError::Db("a new run has no id".into()))?;
    for intent in &r.intents {
        insert_intent(c, run, intent)?;
    }
    for d in &r.newly_deferred {
        c.exec(
            "INSERT INTO deferred (seq, row, since_run, in_run) VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT (seq) DO UPDATE SET row = excluded.row,
                since_run = excluded.since_run, in_run = NULL",
            &[i(d.seq), V::T(&json(d)?), V::I(run)],
        )?;
    }
    for seq in &r.included {
        c.exec(
            "UPDATE deferred SET in_run = ?1 WHERE seq = ?2",
            &[V::I(run), i(*seq)],
        )?;
    }
    for (account, reason) in &r.flagged {
        flag(c, account, run, reason)?;
    }
    Ok(Run {
        id: run,
        from_seq: from,
        to_seq: to,
    })
}

fn read_intent(r: &brume_sql::Row) -> Result<Intent, SettleError> {
    let address = r.t(2)?;
    let anchor = B256::from(hash32(&r.b(4)?)?);
    Ok(Intent {
        id: r.i(0)?,
        account: r.t(1)?,
        address: address
            .parse()
            .map_err(|_| SettleError::Db(format!("{address:?} is not an address")))?,
        amount: u128_of(&r.t(3)?)?,
        anchor,
        rows: r.i(5)? as u64,
        carried: from_json(&r.t(6)?)?,
        state: State::parse(&r.t(7)?),
        tx_hash: r.ot(8)?,
        error: r.ot(9)?,
        chain_anchor: match r.ob(10)? {
            Some(a) => B256::from(hash32(&a)?),
            None => anchor,
        },
    })
}

pub(crate) fn intents(c: &mut dyn Sql, run: i64, kind: Kind) -> Result<Vec<Intent>, SettleError> {
    c.query(
        "SELECT id, account, address, amount, anchor, rows, carried, state, tx_hash, error,
            chain_anchor
         FROM intents WHERE run = ?1 AND kind = ?2 ORDER BY id",
        &[V::I(run), V::T(kind.as_str())],
    )?
    .iter()
    .map(read_intent)
    .collect()
}

pub(crate) fn resolve_intents(
    c: &mut dyn Sql,
    run: i64,
    kind: Kind,
    outcomes: &[(i64, Result<B256, String>)],
) -> Result<(), SettleError> {
    let all = intents(c, run, kind)?;
    let by_id: HashMap<i64, &Intent> = all.iter().map(|i| (i.id, i)).collect();
    for (id, outcome) in outcomes {
        let Some(i) = by_id.get(id) else { continue };
        match outcome {
            Ok(hash) => {
                c.exec(
                    "UPDATE intents SET state = 'done', tx_hash = ?1 WHERE id = ?2",
                    &[V::T(&hash.to_string()), V::I(*id)],
                )?;
                if kind == Kind::Payout {
                    for carry in &i.carried {
                        c.exec(
                            "UPDATE carry SET paid_intent = ?1 WHERE id = ?2",
                            &[V::I(*id), V::I(*carry)],
                        )?;
                    }
                }
            }
            Err(e) => {
                c.exec(
                    "UPDATE intents SET state = 'failed', error = ?1 WHERE id = ?2",
                    &[V::T(e), V::I(*id)],
                )?;
                match kind {
                    Kind::Collect => flag(c, &i.account, run, e)?,
                    Kind::Payout => carry_failed_payout(c, run, i, e)?,
                }
            }
        }
    }
    Ok(())
}

/// What a failed payout owed stays owed: carried (the earlier carry
/// entries it included stay unpaid).
fn carry_failed_payout(c: &mut dyn Sql, run: i64, i: &Intent, e: &str) -> Result<(), SettleError> {
    let mut amount = i.amount;
    let mut rows = i.rows;
    let mut agg = brume_ledger::row::Aggregate::new();
    agg.add(&i.anchor.0);
    for carry in &i.carried {
        let r = c
            .one(
                "SELECT amount, aggregate, rows FROM carry WHERE id = ?1",
                &[V::I(*carry)],
            )?
            .ok_or_else(|| SettleError::Db(format!("carry entry {carry} is missing")))?;
        amount -= u128_of(&r.t(0)?)?;
        rows -= r.i(2)? as u64;
        agg.add(&hash32(&r.b(1)?)?);
    }
    c.exec(
        "INSERT INTO carry (run, account, amount, aggregate, rows, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            V::I(run),
            V::T(&i.account),
            V::T(&amount.to_string()),
            V::B(&agg.0.0[..]),
            self::i(rows),
            V::T(&format!("payout failed: {e}")),
        ],
    )?;
    Ok(())
}

pub(crate) fn payouts_planned(c: &mut dyn Sql, run: i64) -> Result<bool, SettleError> {
    let v = int(c, "SELECT planned FROM runs WHERE id = ?1", &[V::I(run)])?
        .ok_or_else(|| SettleError::Db(format!("run {run} is missing")))?;
    Ok(v != 0)
}

pub(crate) fn unpaid_carry(c: &mut dyn Sql) -> Result<Vec<Carry>, SettleError> {
    c.query(
        "SELECT id, account, amount, aggregate, rows, reason FROM carry
         WHERE paid_intent IS NULL ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(Carry {
            id: r.i(0)?,
            account: r.t(1)?,
            amount: u128_of(&r.t(2)?)?,
            aggregate: hash32(&r.b(3)?)?,
            rows: r.i(4)? as u64,
            reason: r.t(5)?,
        })
    })
    .collect()
}

/// A run's collections, written before any is sent.
pub(crate) struct NewRun {
    /// The range of ledger sequence numbers, `(from, to]`.
    pub from: u64,
    pub to: u64,
    /// The rows in that range.
    pub rows: u64,
    pub intents: Vec<NewIntent>,
    /// Rows that wait (a payer was flagged).
    pub newly_deferred: Vec<Slim>,
    /// Earlier deferred rows this run includes.
    pub included: Vec<u64>,
    /// Flagged payers, and why.
    pub flagged: Vec<(String, String)>,
}

/// A run's payouts and what they complete, written before any is sent.
pub(crate) struct PlannedPayouts {
    pub intents: Vec<NewIntent>,
    pub carry: Vec<Carry>,
    /// Rows that still wait (a collection failed).
    pub deferred: Vec<Slim>,
    /// Earlier deferred rows this run completed.
    pub done_deferred: Vec<u64>,
    /// Every row this run completed.
    pub complete: Vec<Slim>,
    /// Beneficiaries that are not addresses, and why: flagged.
    pub unpayable: Vec<(String, String)>,
}

pub(crate) fn plan_payouts(
    c: &mut dyn Sql,
    run: i64,
    p: &PlannedPayouts,
) -> Result<(), SettleError> {
    for (account, reason) in &p.unpayable {
        flag(c, account, run, reason)?;
    }
    for intent in &p.intents {
        insert_intent(c, run, intent)?;
    }
    let marks: Vec<[V<'_>; 6]> = p
        .complete
        .iter()
        .flat_map(|r| {
            let payers = r
                .parts
                .iter()
                .map(|part| (&part.account, "payer", part.amount));
            let payees = r
                .payouts
                .iter()
                .map(|(b, amount)| (b, "beneficiary", *amount));
            payers.chain(payees).map(|(entity, role, amount)| {
                [
                    V::I(run),
                    i(r.seq),
                    V::T(&r.work_id),
                    V::T(entity),
                    V::T(role),
                    V::I((amount == 0).into()),
                ]
            })
        })
        .collect();
    insert_many(
        c,
        "INSERT INTO marks (run, seq, work_id, entity, role, zero)",
        &marks,
    )?;
    for k in &p.carry {
        c.exec(
            "INSERT INTO carry (run, account, amount, aggregate, rows, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                V::I(run),
                V::T(&k.account),
                V::T(&k.amount.to_string()),
                V::B(&k.aggregate[..]),
                i(k.rows),
                V::T(&k.reason),
            ],
        )?;
    }
    let mine: HashSet<i64> = c
        .query(
            "SELECT id FROM intents WHERE run = ?1 AND kind = 'collect'",
            &[V::I(run)],
        )?
        .iter()
        .map(|r| r.i(0))
        .collect::<Result<_, _>>()?;
    for r in &p.deferred {
        c.exec(
            "INSERT INTO deferred (seq, row, since_run, in_run) VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT (seq) DO UPDATE SET row = excluded.row, in_run = NULL",
            &[i(r.seq), V::T(&json(r)?), V::I(run)],
        )?;
        for id in r.parts.iter().filter_map(|p| p.collected) {
            if mine.contains(&id) {
                c.exec(
                    "INSERT INTO held_log (seq, intent) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    &[i(r.seq), V::I(id)],
                )?;
            }
        }
    }
    for seq in &p.done_deferred {
        c.exec("DELETE FROM deferred WHERE seq = ?1", &[i(*seq)])?;
        c.exec(
            "INSERT INTO late (seq, run) VALUES (?1, ?2)
             ON CONFLICT (seq) DO UPDATE SET run = excluded.run",
            &[i(*seq), V::I(run)],
        )?;
    }
    c.exec(
        "UPDATE runs SET planned = 1, phase = 'paying', settled_rows = ?2 WHERE id = ?1",
        &[V::I(run), i(p.complete.len() as u64)],
    )?;
    Ok(())
}

/// Rows inserted by one statement, at most: a round trip per this many
/// rows on a server, and well under SQLite's limit of 32,766 parameters.
const INSERT_CHUNK: usize = 200;

/// `insert` (`INSERT INTO t (columns)`) of every row, [`INSERT_CHUNK`] rows
/// a statement.
fn insert_many<const N: usize>(
    c: &mut dyn Sql,
    insert: &str,
    rows: &[[V<'_>; N]],
) -> Result<(), SettleError> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let cols: Vec<String> = (1..=N).map(|k| format!("?{}", r * N + k)).collect();
                format!("({})", cols.join(", "))
            })
            .collect();
        let sql = format!("{insert} VALUES {}", values.join(", "));
        let params: Vec<V<'_>> = chunk.iter().flatten().copied().collect();
        c.exec(&sql, &params)?;
    }
    Ok(())
}

pub(crate) fn finish_run(c: &mut dyn Sql, run: i64, timings: &str) -> Result<(), SettleError> {
    c.exec(
        "UPDATE runs SET phase = 'done', finished_ms = ?2, timings = ?3 WHERE id = ?1",
        &[V::I(run), V::I(now_ms()), V::T(timings)],
    )?;
    Ok(())
}

fn lines(c: &mut dyn Sql, run: i64, kind: Kind) -> Result<Vec<TransferLine>, SettleError> {
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

pub(crate) fn report(c: &mut dyn Sql, run: i64) -> Result<Option<Report>, SettleError> {
    let Some(r) = c.one(
        "SELECT rows, settled_rows, timings FROM runs WHERE id = ?1",
        &[V::I(run)],
    )?
    else {
        return Ok(None);
    };
    let (rows, settled, timings) = (r.i(0)?, r.i(1)?, r.ot(2)?);
    let collections = lines(c, run, Kind::Collect)?;
    let payouts = lines(c, run, Kind::Payout)?;
    let flagged: Vec<(String, String)> = c
        .query(
            "SELECT account, reason FROM flagged WHERE run = ?1 ORDER BY account",
            &[V::I(run)],
        )?
        .iter()
        .map(|r| Ok((r.t(0)?, r.t(1)?)))
        .collect::<Result<_, SettleError>>()?;
    let done = |l: &&TransferLine| l.state == "done";
    let s = sums(c)?;
    let deferred = int(c, "SELECT COUNT(*) FROM deferred", &[])?.unwrap_or(0);
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

pub(crate) fn last_report(c: &mut dyn Sql) -> Result<Option<Report>, SettleError> {
    match int(
        c,
        "SELECT id FROM runs WHERE phase = 'done' ORDER BY id DESC LIMIT 1",
        &[],
    )? {
        Some(run) => report(c, run),
        None => Ok(None),
    }
}

pub(crate) fn carry_total(c: &mut dyn Sql) -> Result<u128, SettleError> {
    Ok(unpaid_carry(c)?.iter().map(|k| k.amount).sum())
}

fn held(c: &mut dyn Sql) -> Result<u128, SettleError> {
    Ok(deferred_rows(c)?
        .iter()
        .flat_map(|r| r.parts.iter())
        .filter(|p| p.collected.is_some())
        .map(|p| p.amount)
        .sum())
}

pub(crate) fn sums(c: &mut dyn Sql) -> Result<Sums, SettleError> {
    let mut total = |kind: &str| -> Result<u128, SettleError> {
        texts(
            c,
            "SELECT amount FROM intents WHERE kind = ?1 AND state = 'done'",
            &[V::T(kind)],
        )?
        .iter()
        .map(|s| u128_of(s))
        .sum()
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

pub(crate) fn deferred_by_payer(c: &mut dyn Sql) -> Result<HashMap<String, u128>, SettleError> {
    let mut out = HashMap::new();
    for r in deferred_rows(c)? {
        for p in r.parts.iter().filter(|p| p.collected.is_none()) {
            *out.entry(p.account.clone()).or_default() += p.amount;
        }
    }
    Ok(out)
}

pub(crate) fn collected_by_payer(c: &mut dyn Sql) -> Result<HashMap<String, u128>, SettleError> {
    let mut out: HashMap<String, u128> = HashMap::new();
    for r in c.query(
        "SELECT account, amount FROM intents WHERE kind = 'collect' AND state = 'done'",
        &[],
    )? {
        *out.entry(r.t(0)?).or_default() += u128_of(&r.t(1)?)?;
    }
    Ok(out)
}

pub(crate) fn sent(c: &mut dyn Sql) -> Result<Vec<Sent>, SettleError> {
    c.query(
        "SELECT run, kind, account, address, amount, COALESCE(chain_anchor, anchor), rows,
            tx_hash FROM intents WHERE state = 'done' ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(Sent {
            run: r.i(0)? as u64,
            kind: r.t(1)?,
            account: r.t(2)?,
            address: r.t(3)?,
            amount: r.t(4)?,
            anchor: B256::from(hash32(&r.b(5)?)?).to_string(),
            rows: r.i(6)? as u64,
            tx_hash: r.t(7)?,
        })
    })
    .collect()
}
