//! The settlement journal behind a trait: what a run needs of its store,
//! one method per transaction.
//!
//! A run reads and writes the journal only through [`Journal`]. Every
//! backend runs the same functions ([`db`], over [`brume_sql::Sql`]) in a transaction
//! of its own ([`brume_sql::Backend`]): [`db::Db`] (SQLite, `dir/settle.db`) and
//! [`postgres::PgJournal`]. Each write is atomic and durable when its
//! future resolves; the order of a run's steps (plan, send, record) is the
//! caller's, and what makes a crash at any point safe (see the crate docs).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use crate::db::{self, Carry, Intent, Kind, RowStatus, Run, Sent, Sums};
pub(crate) use crate::db::{NewRun, PlannedPayouts};
use crate::{Outcome, Report, SettleError, Slim};
use brume_sql::Backend;

pub(crate) mod postgres;

/// A journal operation's future.
pub(crate) type JournalFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SettleError>> + Send + 'a>>;

/// The settlement journal.
pub(crate) trait Journal: Send + Sync {
    /// Where it is, for messages.
    fn location(&self) -> String;

    /// The payout account's balance before the first run.
    fn baseline(&self) -> JournalFuture<'_, Option<u128>>;
    /// Records the baseline, unless one is recorded.
    fn set_baseline(&self, balance: u128) -> JournalFuture<'_, ()>;

    /// The run that started and didn't finish, if any.
    fn unfinished(&self) -> JournalFuture<'_, Option<Run>>;
    /// The last ledger sequence number any run covered (0: none).
    fn last_seq(&self) -> JournalFuture<'_, u64>;
    /// Every row that waits, in sequence order.
    fn deferred_rows(&self) -> JournalFuture<'_, Vec<Slim>>;
    /// The deferred rows `run` included.
    fn deferred_rows_of_run(&self, run: i64) -> JournalFuture<'_, Vec<Slim>>;
    /// The sequence numbers of the deferred rows `run` included, and of
    /// those it deferred.
    fn deferred_seqs_of_run(&self, run: i64) -> JournalFuture<'_, (HashSet<u64>, HashSet<u64>)>;
    /// Starts a run with its collections.
    fn start_run(&self, run: NewRun) -> JournalFuture<'_, Run>;
    /// A run's transfers of one kind, in id order.
    fn intents(&self, run: i64, kind: Kind) -> JournalFuture<'_, Vec<Intent>>;
    /// Records what became of sent transfers.
    fn resolve_intents(
        &self,
        run: i64,
        kind: Kind,
        outcomes: Vec<Outcome>,
    ) -> JournalFuture<'_, ()>;
    /// Whether `run`'s payouts are planned.
    fn payouts_planned(&self, run: i64) -> JournalFuture<'_, bool>;
    /// Amounts owed to beneficiaries and not yet paid.
    fn unpaid_carry(&self) -> JournalFuture<'_, Vec<Carry>>;
    /// Plans `run`'s payouts.
    fn plan_payouts(&self, run: i64, plan: PlannedPayouts) -> JournalFuture<'_, ()>;
    /// Marks `run` done, with its stages' timings (JSON).
    fn finish_run(&self, run: i64, timings: String) -> JournalFuture<'_, ()>;

    /// `run`'s report.
    fn report(&self, run: i64) -> JournalFuture<'_, Option<Report>>;
    /// The last finished run's report.
    fn last_report(&self) -> JournalFuture<'_, Option<Report>>;
    /// The total of [`Journal::unpaid_carry`].
    fn carry_total(&self) -> JournalFuture<'_, u128>;
    /// Totals collected, paid, carried and held, for the invariants.
    fn sums(&self) -> JournalFuture<'_, Sums>;
    /// What deferred rows' payers still owe, per account.
    fn deferred_by_payer(&self) -> JournalFuture<'_, HashMap<String, u128>>;
    /// What has been collected from each payer.
    fn collected_by_payer(&self) -> JournalFuture<'_, HashMap<String, u128>>;
    /// Every transfer sent (done), in id order.
    fn sent(&self) -> JournalFuture<'_, Vec<Sent>>;
    /// The settlement status of the row `seq`'s payers and beneficiaries.
    fn row_status(
        &self,
        seq: u64,
        payers: Vec<String>,
        beneficiaries: Vec<String>,
    ) -> JournalFuture<'_, Vec<RowStatus>>;

    /// Finished runs whose rows' statuses are not yet written to the ledger.
    fn unmarked_runs(&self) -> JournalFuture<'_, Vec<i64>>;
    /// The ledger status updates of `run`'s rows.
    fn status_updates(&self, run: i64)
    -> JournalFuture<'_, Vec<brume_ledger::store::StatusUpdate>>;
    /// Records that `run`'s statuses are written.
    fn marked(&self, run: i64) -> JournalFuture<'_, ()>;
}

/// A journal function, with its arguments.
pub(crate) type Op<T> = brume_sql::Op<T, SettleError>;

impl<B: Backend<Error = SettleError>> Journal for B {
    fn location(&self) -> String {
        Backend::location(self)
    }

    fn baseline(&self) -> JournalFuture<'_, Option<u128>> {
        self.run(false, Box::new(db::baseline))
    }

    fn set_baseline(&self, balance: u128) -> JournalFuture<'_, ()> {
        self.run(true, Box::new(move |c| db::set_baseline(c, balance)))
    }

    fn unfinished(&self) -> JournalFuture<'_, Option<Run>> {
        self.run(false, Box::new(db::unfinished))
    }

    fn last_seq(&self) -> JournalFuture<'_, u64> {
        self.run(false, Box::new(db::last_seq))
    }

    fn deferred_rows(&self) -> JournalFuture<'_, Vec<Slim>> {
        self.run(false, Box::new(db::deferred_rows))
    }

    fn deferred_rows_of_run(&self, run: i64) -> JournalFuture<'_, Vec<Slim>> {
        self.run(false, Box::new(move |c| db::deferred_rows_of_run(c, run)))
    }

    fn deferred_seqs_of_run(&self, run: i64) -> JournalFuture<'_, (HashSet<u64>, HashSet<u64>)> {
        self.run(false, Box::new(move |c| db::deferred_seqs_of_run(c, run)))
    }

    fn start_run(&self, r: NewRun) -> JournalFuture<'_, Run> {
        self.run(true, Box::new(move |c| db::start_run(c, &r)))
    }

    fn intents(&self, run: i64, kind: Kind) -> JournalFuture<'_, Vec<Intent>> {
        self.run(false, Box::new(move |c| db::intents(c, run, kind)))
    }

    fn resolve_intents(
        &self,
        run: i64,
        kind: Kind,
        outcomes: Vec<Outcome>,
    ) -> JournalFuture<'_, ()> {
        self.run(
            true,
            Box::new(move |c| db::resolve_intents(c, run, kind, &outcomes)),
        )
    }

    fn payouts_planned(&self, run: i64) -> JournalFuture<'_, bool> {
        self.run(false, Box::new(move |c| db::payouts_planned(c, run)))
    }

    fn unpaid_carry(&self) -> JournalFuture<'_, Vec<Carry>> {
        self.run(false, Box::new(db::unpaid_carry))
    }

    fn plan_payouts(&self, run: i64, p: PlannedPayouts) -> JournalFuture<'_, ()> {
        self.run(true, Box::new(move |c| db::plan_payouts(c, run, &p)))
    }

    fn finish_run(&self, run: i64, timings: String) -> JournalFuture<'_, ()> {
        self.run(true, Box::new(move |c| db::finish_run(c, run, &timings)))
    }

    fn report(&self, run: i64) -> JournalFuture<'_, Option<Report>> {
        self.run(false, Box::new(move |c| db::report(c, run)))
    }

    fn last_report(&self) -> JournalFuture<'_, Option<Report>> {
        self.run(false, Box::new(db::last_report))
    }

    fn carry_total(&self) -> JournalFuture<'_, u128> {
        self.run(false, Box::new(db::carry_total))
    }

    fn sums(&self) -> JournalFuture<'_, Sums> {
        self.run(false, Box::new(db::sums))
    }

    fn deferred_by_payer(&self) -> JournalFuture<'_, HashMap<String, u128>> {
        self.run(false, Box::new(db::deferred_by_payer))
    }

    fn collected_by_payer(&self) -> JournalFuture<'_, HashMap<String, u128>> {
        self.run(false, Box::new(db::collected_by_payer))
    }

    fn sent(&self) -> JournalFuture<'_, Vec<Sent>> {
        self.run(false, Box::new(db::sent))
    }

    fn row_status(
        &self,
        seq: u64,
        payers: Vec<String>,
        beneficiaries: Vec<String>,
    ) -> JournalFuture<'_, Vec<RowStatus>> {
        self.run(
            false,
            Box::new(move |c| db::row_status(c, seq, &payers, &beneficiaries)),
        )
    }

    fn unmarked_runs(&self) -> JournalFuture<'_, Vec<i64>> {
        self.run(false, Box::new(db::unmarked_runs))
    }

    fn status_updates(
        &self,
        run: i64,
    ) -> JournalFuture<'_, Vec<brume_ledger::store::StatusUpdate>> {
        self.run(false, Box::new(move |c| db::status_updates(c, run)))
    }

    fn marked(&self, run: i64) -> JournalFuture<'_, ()> {
        self.run(true, Box::new(move |c| db::marked(c, run)))
    }
}

impl Backend for db::Db {
    type Error = SettleError;

    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn run<T: Send + 'static>(&self, write: bool, f: Op<T>) -> JournalFuture<'_, T> {
        if write {
            Box::pin(self.write(f))
        } else {
            Box::pin(self.read(f))
        }
    }
}
