//! One set of statements, run on SQLite or on PostgreSQL.
//!
//! A store's functions run plain statements through [`Sql`], on a blocking
//! thread, inside the transaction their caller opened: [`Lite`] on a
//! rusqlite connection, [`Pg`] on a tokio-postgres client or transaction
//! (driven from that thread). Statements are written in the dialect both
//! share (`ON CONFLICT`, `RETURNING`, `?N` parameters, which the PostgreSQL
//! side rewrites to `$N`). Values are integers, text and bytes ([`V`]);
//! integer parameters fit whatever integer column they meet.
//!
//! The settlement journal (`brume-settle`) is written on it, and the
//! broker's leases; the rest of the broker's store is next.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use brume_pg::tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use bytes::BytesMut;

/// What a statement or a column read failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Pg(#[from] brume_pg::tokio_postgres::Error),
    /// A column missing, NULL, or of another kind than asked.
    #[error("{0}")]
    Column(String),
}

fn pg_message(e: &brume_pg::tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => e.to_string(),
    }
}

/// A parameter.
#[derive(Debug, Clone, Copy)]
pub enum V<'a> {
    I(i64),
    T(&'a str),
    B(&'a [u8]),
    Null,
}

impl<'a> From<&'a str> for V<'a> {
    fn from(s: &'a str) -> V<'a> {
        V::T(s)
    }
}

impl<'a> From<&'a String> for V<'a> {
    fn from(s: &'a String) -> V<'a> {
        V::T(s)
    }
}

impl From<i64> for V<'_> {
    fn from(i: i64) -> Self {
        V::I(i)
    }
}

impl<'a> From<&'a [u8]> for V<'a> {
    fn from(b: &'a [u8]) -> V<'a> {
        V::B(b)
    }
}

impl<'a, T: Into<V<'a>>> From<Option<T>> for V<'a> {
    fn from(v: Option<T>) -> V<'a> {
        v.map_or(V::Null, Into::into)
    }
}

/// A column's value.
#[derive(Debug, Clone)]
pub enum Val {
    I(i64),
    T(String),
    B(Vec<u8>),
    Null,
}

/// A result row.
#[derive(Debug)]
pub struct Row(Vec<Val>);

fn bad(at: usize, want: &str, got: &Val) -> Error {
    Error::Column(format!("column {at}: expected {want}, found {got:?}"))
}

impl Row {
    fn at(&self, i: usize) -> Result<&Val, Error> {
        self.0
            .get(i)
            .ok_or_else(|| Error::Column(format!("no column {i}")))
    }

    pub fn i(&self, i: usize) -> Result<i64, Error> {
        self.oi(i)?
            .ok_or_else(|| Error::Column(format!("column {i} is NULL")))
    }

    pub fn oi(&self, i: usize) -> Result<Option<i64>, Error> {
        match self.at(i)? {
            Val::I(v) => Ok(Some(*v)),
            Val::Null => Ok(None),
            v => Err(bad(i, "an integer", v)),
        }
    }

    pub fn t(&self, i: usize) -> Result<String, Error> {
        self.ot(i)?
            .ok_or_else(|| Error::Column(format!("column {i} is NULL")))
    }

    pub fn ot(&self, i: usize) -> Result<Option<String>, Error> {
        match self.at(i)? {
            Val::T(v) => Ok(Some(v.clone())),
            Val::Null => Ok(None),
            v => Err(bad(i, "text", v)),
        }
    }

    pub fn b(&self, i: usize) -> Result<Vec<u8>, Error> {
        self.ob(i)?
            .ok_or_else(|| Error::Column(format!("column {i} is NULL")))
    }

    pub fn ob(&self, i: usize) -> Result<Option<Vec<u8>>, Error> {
        match self.at(i)? {
            Val::B(v) => Ok(Some(v.clone())),
            Val::Null => Ok(None),
            v => Err(bad(i, "bytes", v)),
        }
    }
}

/// Which database a [`Sql`] speaks to, for the few statements the two
/// dialects don't share (schema changes, JSON functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection (or a transaction) that runs a store's statements.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs statements separated by `;`, without parameters (schema).
    fn batch(&mut self, sql: &str) -> Result<(), Error>;
    /// Runs a statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, p: &[V<'_>]) -> Result<u64, Error>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, p: &[V<'_>]) -> Result<Vec<Row>, Error>;

    /// The first row, if any.
    fn one(&mut self, sql: &str, p: &[V<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, p)?.into_iter().next())
    }
}

/// A unit of work on a [`Backend`], run in one transaction.
pub type Op<T, E> = Box<dyn FnOnce(&mut dyn Sql) -> Result<T, E> + Send>;

/// What [`Backend::run`] returns.
pub type OpFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// A database that runs a store's [`Op`]s: each in a transaction of its
/// own, on a blocking thread, committed (durably) if it is a write and
/// succeeds, rolled back otherwise. A store's functions are written once
/// over [`Sql`]; each backend is one implementation of this trait.
pub trait Backend: Send + Sync {
    /// The store's error, which statement failures convert into.
    type Error: From<Error> + Send + 'static;

    /// Where it is, for messages (a path, or a URL without its password).
    fn location(&self) -> String;

    /// Runs `op`; `write` says whether it changes anything.
    fn run<T: Send + 'static>(
        &self,
        write: bool,
        op: Op<T, Self::Error>,
    ) -> OpFuture<'_, T, Self::Error>;
}

/// SQLite: statements are cached on the connection.
#[derive(Debug)]
pub struct Lite<'c>(pub &'c rusqlite::Connection);

impl rusqlite::ToSql for V<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            V::I(i) => ValueRef::Integer(i),
            V::T(s) => ValueRef::Text(s.as_bytes()),
            V::B(b) => ValueRef::Blob(b),
            V::Null => ValueRef::Null,
        }))
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&mut self, sql: &str) -> Result<(), Error> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn exec(&mut self, sql: &str, p: &[V<'_>]) -> Result<u64, Error> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(p))? as u64)
    }

    fn query(&mut self, sql: &str, p: &[V<'_>]) -> Result<Vec<Row>, Error> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(p))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i)? {
                    ValueRef::Integer(v) => Val::I(v),
                    ValueRef::Text(t) => Val::T(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::B(b.to_vec()),
                    ValueRef::Null => Val::Null,
                    ValueRef::Real(f) => Val::T(f.to_string()),
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}

impl ToSql for V<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            V::I(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            V::I(i) if *ty == Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            V::I(i) => i.to_sql(ty, out),
            V::T(s) => s.to_sql(ty, out),
            V::B(b) => b.to_sql(ty, out),
            V::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `?N` → `$N` (the journal's statements hold no other `?`).
pub fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

/// PostgreSQL, driven from a blocking thread: each statement blocks on the
/// runtime that drives the connection. Prepared statements are cached per
/// connection.
#[allow(missing_debug_implementations)] // holds a client and a runtime handle
pub struct Pg<'c, C: brume_pg::tokio_postgres::GenericClient + Sync> {
    pub client: &'c C,
    pub rt: &'c tokio::runtime::Handle,
    pub cache: &'c mut HashMap<String, brume_pg::tokio_postgres::Statement>,
}

impl<C: brume_pg::tokio_postgres::GenericClient + Sync> Pg<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<brume_pg::tokio_postgres::Statement, Error> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(&pg_sql(sql)))?;
        self.cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn params<'p>(p: &'p [V<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    p.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl<C: brume_pg::tokio_postgres::GenericClient + Sync> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&mut self, sql: &str) -> Result<(), Error> {
        Ok(self.rt.block_on(self.client.batch_execute(sql))?)
    }

    fn exec(&mut self, sql: &str, p: &[V<'_>]) -> Result<u64, Error> {
        let stmt = self.statement(sql)?;
        Ok(self.rt.block_on(self.client.execute(&stmt, &params(p)))?)
    }

    fn query(&mut self, sql: &str, p: &[V<'_>]) -> Result<Vec<Row>, Error> {
        let stmt = self.statement(sql)?;
        let rows = self.rt.block_on(self.client.query(&stmt, &params(p)))?;
        rows.iter().map(pg_row).collect()
    }
}

fn pg_row(r: &brume_pg::tokio_postgres::Row) -> Result<Row, Error> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let ty = c.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Val::I)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(|v| Val::I(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?.map(|v| Val::I(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(|v| Val::I(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Val::B)
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Val::T)
        };
        vals.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_dollars() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?2"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
    }

    #[test]
    fn sqlite_round_trips_each_kind_of_value() {
        let c = rusqlite::Connection::open_in_memory().expect("open");
        let mut s = Lite(&c);
        s.exec("CREATE TABLE t (i INTEGER, t TEXT, b BLOB, n TEXT)", &[])
            .expect("create");
        s.exec(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            &[V::I(-7), V::T("x"), V::B(&[1, 2]), V::Null],
        )
        .expect("insert");
        let r = s
            .one("SELECT i, t, b, n FROM t", &[])
            .expect("query")
            .expect("row");
        assert_eq!(r.i(0).expect("i"), -7);
        assert_eq!(r.t(1).expect("t"), "x");
        assert_eq!(r.b(2).expect("b"), vec![1, 2]);
        assert_eq!(r.ot(3).expect("n"), None);
        assert!(r.t(3).is_err(), "NULL is not text");
        assert!(r.i(1).is_err(), "text is not an integer");
        assert!(
            s.one("SELECT i FROM t WHERE i = 0", &[])
                .expect("query")
                .is_none()
        );
    }
}
