//! The statements of the intake's hot path on PostgreSQL, written as queries with a static
//! identity, each taking whole arrays (`unnest`) so a batch of any size is one statement.
//!
//! They are sent pipelined (several in flight on one connection), and diesel-async does not
//! promise that concurrent statements reach the server in the order they were started: only
//! statements whose order does not matter are pipelined together; what must come after
//! something waits for it (`writer.rs`, `ingest.rs`).
//!
//! diesel-async prepares a statement once per connection and reuses it when its type says
//! its SQL never changes; a `sql_query` or a multi-row `insert_into(..).values(vec)` cannot
//! promise that, so each would be prepared again on every batch: a second round trip per
//! statement, and the round trip is what a batch costs here. These say what they are once.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Nullable, Text};

use crate::clock::Millis;

/// Declares a statement type: its fields are bound in order, between the SQL fragments.
macro_rules! statement {
    (
        $(#[$doc:meta])*
        $name:ident $(-> $output:ty)? {
            $($field:ident: $rust:ty => $sql_type:ty),* $(,)?
        }
        sql: [$first:literal $(, $rest:literal)* $(,)?]
    ) => {
        $(#[$doc])*
        pub(super) struct $name<'a> {
            $(pub(super) $field: $rust,)*
            pub(super) _life: std::marker::PhantomData<&'a ()>,
        }

        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl QueryFragment<Pg> for $name<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql($first);
                let rest: &[&str] = &[$($rest),*];
                let mut rest = rest.iter();
                $(
                    out.push_bind_param::<$sql_type, _>(&self.$field)?;
                    if let Some(sql) = rest.next() {
                        out.push_sql(sql);
                    }
                )*
                Ok(())
            }
        }

        $(impl Query for $name<'_> {
            type SqlType = $output;
        })?
    };
}

statement! {
    /// Stores raw webhook bodies; answers the keys that were new (a repeated key is skipped).
    InsertEvents -> Text {
        keys: Vec<&'a str> => Array<Text>,
        types: Vec<Option<&'a str>> => Array<Nullable<Text>>,
        dispositions: Vec<&'static str> => Array<Text>,
        received_at_ms: Vec<Millis> => Array<BigInt>,
        bodies: Vec<&'a [u8]> => Array<Bytea>,
    }
    sql: [
        "INSERT INTO webhook_events (event_key, event_type, disposition, received_at_ms, body) \
         SELECT * FROM unnest(",
        "::text[], ",
        "::text[], ",
        "::text[], ",
        "::int8[], ",
        "::bytea[]) ON CONFLICT (event_key) DO NOTHING RETURNING event_key",
    ]
}

statement! {
    /// The pending intents waiting for any of these accounts, with every account each
    /// expects and its result so far: (intent, created at, account, status, occurred at).
    Waiting -> (Text, BigInt, Text, Nullable<Text>, Nullable<BigInt>) {
        accounts: Vec<&'a str> => Array<Text>,
    }
    sql: [
        "SELECT ia.refresh_intent_id, ri.created_at_ms, ia.account_id, r.status, \
         r.occurred_at_ms \
         FROM intent_accounts ia \
         JOIN refresh_intents ri ON ri.id = ia.refresh_intent_id \
         LEFT JOIN results r ON r.sequence = ia.result_sequence \
         WHERE ia.refresh_intent_id IN ( \
             SELECT refresh_intent_id FROM intent_accounts \
             WHERE account_id = ANY(",
        ") AND result_sequence IS NULL)",
    ]
}

statement! {
    /// Each account's Link, and whether a create call for it is in flight (a live mark, by
    /// the database's clock, which every replica shares): (account, Link, creating).
    AccountLinks -> (Text, Text, Bool, Bool) {
        accounts: Vec<&'a str> => Array<Text>,
    }
    sql: [
        "SELECT a.account_id, a.link_id, EXISTS ( \
             SELECT 1 FROM creates_in_flight c \
             WHERE c.link_id = a.link_id \
             AND c.expires_at_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
         ), EXISTS (SELECT 1 FROM link_tokens t WHERE t.link_id = a.link_id) \
         FROM accounts a WHERE a.account_id = ANY(",
        ")",
    ]
}

statement! {
    /// Appends results to the log, with the sequences the writer took from the counter.
    AppendResults {
        sequences: Vec<i64> => Array<BigInt>,
        accounts: Vec<&'a str> => Array<Text>,
        links: Vec<&'a str> => Array<Text>,
        intents: Vec<&'a str> => Array<Text>,
        statuses: Vec<&'a str> => Array<Text>,
        new_movements: Vec<i64> => Array<BigInt>,
        public_errors: Vec<&'a str> => Array<Text>,
        event_ids: Vec<&'a str> => Array<Text>,
        occurred_at_ms: Vec<Millis> => Array<BigInt>,
        committed_at_ms: Vec<Millis> => Array<BigInt>,
        completes: Vec<bool> => Array<Bool>,
        details: Vec<String> => Array<Text>,
        fetches: Vec<bool> => Array<Bool>,
        traces: Vec<&'a str> => Array<Text>,
    }
    sql: [
        "INSERT INTO results (sequence, account_id, link_id, refresh_intent_id, status, \
         new_movements, public_error, event_id, occurred_at_ms, committed_at_ms, \
         completes_intent, detail, fetches_movements, trace_context) SELECT * FROM unnest(",
        "::int8[], ", "::text[], ", "::text[], ", "::text[], ", "::text[], ", "::int8[], ",
        "::text[], ", "::text[], ", "::int8[], ", "::int8[], ", "::bool[], ", "::text[], ",
        "::bool[], ", "::text[])",
    ]
}

statement! {
    /// Marks which result answered each (intent, account).
    AnswerAccounts {
        intents: Vec<&'a str> => Array<Text>,
        accounts: Vec<&'a str> => Array<Text>,
        sequences: Vec<i64> => Array<BigInt>,
    }
    sql: [
        "UPDATE intent_accounts SET result_sequence = a.sequence FROM unnest(",
        "::text[], ",
        "::text[], ",
        "::int8[]) AS a(intent, account, sequence) \
         WHERE refresh_intent_id = a.intent AND account_id = a.account",
    ]
}

statement! {
    /// Completes intents: status, the completing sequence, and when Fintoc completed it.
    FinishIntents {
        ids: Vec<&'a str> => Array<Text>,
        statuses: Vec<&'static str> => Array<Text>,
        sequences: Vec<i64> => Array<BigInt>,
        completed_at_ms: Vec<Millis> => Array<BigInt>,
    }
    sql: [
        "UPDATE refresh_intents r SET status = f.status, completed_sequence = f.sequence, \
         completed_at_ms = f.at FROM unnest(",
        "::text[], ",
        "::text[], ",
        "::int8[], ",
        "::int8[]) AS f(id, status, sequence, at) WHERE r.id = f.id",
    ]
}

statement! {
    /// Starts the rejected-credentials hold of these Links at these times.
    RejectLinks {
        links: Vec<&'a str> => Array<Text>,
        at_ms: Vec<Millis> => Array<BigInt>,
    }
    sql: [
        "UPDATE links SET rejected_at_ms = r.at FROM unnest(",
        "::text[], ",
        "::int8[]) AS r(link, at) WHERE link_id = r.link",
    ]
}

statement! {
    /// Keeps these events until the intent being created for their Link is known.
    HoldEvents {
        keys: Vec<&'a str> => Array<Text>,
    }
    sql: [
        "UPDATE webhook_events SET disposition = 'held' WHERE event_key = ANY(",
        ")",
    ]
}

/// Now on the database's clock, in Unix milliseconds: leases (create marks) are written and
/// judged by this one clock, so replicas whose clocks differ agree on when one runs out.
pub(super) const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Held events, written as the partial index `webhook_events_held` is: with the value bound
/// as a parameter, PostgreSQL's generic plan for the prepared statement cannot use the index
/// and reads every event ever stored, under the counter's lock (40 ms at 600,000 events,
/// once a second, stalling every writer of the cluster).
pub(super) fn is_held() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("webhook_events.disposition = 'held'")
}
