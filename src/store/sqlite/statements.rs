//! The statements on the intake's hot path, written as queries with a static identity.
//!
//! diesel caches prepared statements by query type when the type says its SQL never changes;
//! its generic `insert_into(..).values(..)` cannot promise that on SQLite (absent values would
//! change the column list), so it rebuilt the SQL text on every insert just to find the
//! cached statement: ~12% of the writer's time under load. These say what they are once.
//!
//! The log's insert reads its sequence back with `last_insert_rowid()` rather than
//! `RETURNING`: SQLite gathers RETURNING rows in a temporary b-tree built for each statement.

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, Text};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{QueryResult, RunQueryDsl};

use super::models::{NewResult, NewWebhookEvent};

/// `INSERT OR IGNORE` of one raw webhook event: 1 row affected, or 0 for a duplicate key.
pub struct InsertEvent<'a>(pub &'a NewWebhookEvent<'a>);

impl QueryId for InsertEvent<'_> {
    type QueryId = InsertEvent<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for InsertEvent<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let e = self.0;
        out.push_sql(
            "INSERT OR IGNORE INTO webhook_events \
             (event_key, event_type, disposition, received_at_ms, body) VALUES (",
        );
        out.push_bind_param::<Text, _>(&e.event_key)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&e.event_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&e.disposition)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&e.received_at_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<Binary, _>(&e.body)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for InsertEvent<'_> {}

/// Appends one result to the log; [`LastRowid`] then reads the sequence SQLite assigned.
pub struct InsertResult<'a>(pub &'a NewResult<'a>);

impl QueryId for InsertResult<'_> {
    type QueryId = InsertResult<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for InsertResult<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let r = self.0;
        out.push_sql(
            "INSERT INTO results (account_id, link_id, refresh_intent_id, status, new_movements, \
             public_error, event_id, occurred_at_ms, committed_at_ms, completes_intent, detail, \
             fetches_movements, trace_context) VALUES (",
        );
        out.push_bind_param::<Text, _>(&r.account_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.link_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.refresh_intent_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.status)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&r.new_movements)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.public_error)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.event_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&r.occurred_at_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&r.committed_at_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&r.completes_intent)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.stored_detail)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&r.fetches_movements)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.trace_context)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for InsertResult<'_> {}

/// `SELECT last_insert_rowid()`: the rowid of this connection's latest insert.
pub struct LastRowid;

impl QueryId for LastRowid {
    type QueryId = LastRowid;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for LastRowid {
    type SqlType = BigInt;
}

impl QueryFragment<Sqlite> for LastRowid {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("SELECT last_insert_rowid()");
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for LastRowid {}

/// Appends one result and returns its sequence.
pub fn insert_result(conn: &mut SqliteConnection, new: &NewResult<'_>) -> QueryResult<i64> {
    InsertResult(new).execute(conn)?;
    LastRowid.get_result(conn)
}

#[cfg(test)]
mod tests {
    use crate::store::seam::Backend as _;
    use diesel::prelude::*;

    use super::*;
    use crate::domain::ResultRow;
    use crate::store::rows::ResultRecord;
    use crate::store::sqlite::schema::{results, webhook_events};

    #[tokio::test]
    async fn the_hand_written_inserts_match_the_schema() {
        // Opening a store creates and migrates the file; the statements then run on their own.
        let (dir, store) = crate::store::sqlite::tests::open().await;
        store.close().await;
        let url = dir.path().join("t.db").to_string_lossy().into_owned();
        let mut conn = SqliteConnection::establish(&url).unwrap();
        let event = NewWebhookEvent {
            event_key: "evt_1",
            event_type: None,
            disposition: "ignored",
            received_at_ms: 5,
            body: b"{}",
        };
        assert_eq!(InsertEvent(&event).execute(&mut conn).unwrap(), 1);
        assert_eq!(
            InsertEvent(&event).execute(&mut conn).unwrap(),
            0,
            "a duplicate is ignored"
        );
        let stored: (String, Option<String>, Vec<u8>) = webhook_events::table
            .select((
                webhook_events::event_key,
                webhook_events::event_type,
                webhook_events::body,
            ))
            .first(&mut conn)
            .unwrap();
        assert_eq!(stored, ("evt_1".into(), None, b"{}".to_vec()));
        let new = NewResult {
            account_id: "acc",
            link_id: "link",
            refresh_intent_id: "ri",
            status: "failed",
            new_movements: 3,
            public_error: "x",
            event_id: "evt_1",
            occurred_at_ms: 7,
            committed_at_ms: 8,
            completes_intent: true,
            detail: crate::domain::Detail::Result,
            stored_detail: String::new(),
            fetches_movements: true,
            trace_context: String::new(),
        };
        let seq = insert_result(&mut conn, &new).unwrap();
        assert_eq!(insert_result(&mut conn, &new).unwrap(), seq + 1);
        let row: ResultRow = results::table
            .find(seq)
            .select(results::all_columns)
            .first::<ResultRecord>(&mut conn)
            .unwrap()
            .into();
        assert_eq!(
            row,
            ResultRow {
                sequence: seq,
                account_id: "acc".into(),
                link_id: "link".into(),
                refresh_intent_id: "ri".into(),
                status: "failed".into(),
                new_movements: 3,
                public_error: "x".into(),
                event_id: "evt_1".into(),
                occurred_at_ms: 7,
                committed_at_ms: 8,
                completes_intent: true,
                detail: crate::domain::Detail::Result,
                fetches_movements: true,
                trace_context: String::new(),
            }
        );
    }
}
