//! What crosses from the SQLite reader (`sqlite/export/`) to the PostgreSQL writer
//! (`postgres/import.rs`) during `copy-store`: the tables and their rows as both databases
//! store them, batches of them, and the limits on a batch. It sits below both halves and
//! `copy/mod.rs`, which joins them, so nothing imports its way round in a circle.

use diesel::Queryable;

use crate::clock::Millis;
use crate::store::rows::ResultRecord;

/// Rows per batch. PostgreSQL takes at most 65,535 parameters per statement; the widest
/// table copied (results) has [`RESULT_COLUMNS`] columns.
pub(in crate::store) const BATCH_ROWS: usize = 2_500;
pub(in crate::store) const RESULT_COLUMNS: usize = 14;
const _: () = assert!(BATCH_ROWS * RESULT_COLUMNS <= 65_535);

/// Raw events per batch at most, and their bodies' bytes (bodies may be up to
/// `--max-body-bytes` each): a batch is cut at whichever comes first, but holds at least one.
pub(in crate::store) const BATCH_EVENTS: usize = 1_000;
pub(in crate::store) const BATCH_EVENT_BYTES: i64 = 8 << 20;

/// Batches read ahead of the writer: enough to keep both sides busy.
pub(in crate::store) const READ_AHEAD: usize = 2;

/// The tables copied, in the order they are copied: intents before the results that refer
/// to them (the only foreign key); raw events last. Every other table of either schema is in [`NOT_COPIED`], with its reason; a unit
/// test holds both schemas to that, so a new table cannot be forgotten by the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Links,
    LinkTokens,
    Accounts,
    Movements,
    RefreshIntents,
    IntentAccounts,
    IdempotencyKeys,
    FintocKeySeries,
    Results,
    FetchJobs,
    WebhookEvents,
}

/// The tables deliberately left behind, each with why nothing is lost. A name may be absent
/// from the schemas (a table this version does not have yet, or no longer has).
pub const NOT_COPIED: [(&str, &str); 5] = [
    (
        "creates_in_flight",
        "marks of create calls in flight on a replica; none survive the move",
    ),
    (
        "log_counter",
        "set from the SQLite log's high-water mark, not copied",
    ),
    (
        "log_horizon",
        "set from the oldest result copied (how far SQLite's retention had pruned, at most)",
    ),
    (
        "leader_lease",
        "which replica leads the background work: a runtime lease, taken afresh",
    ),
    (
        "link_turns",
        "which replica's turn it is with a Link: runtime leases, none survive the move",
    ),
];

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Links,
        Table::LinkTokens,
        Table::Accounts,
        Table::Movements,
        Table::RefreshIntents,
        Table::IntentAccounts,
        Table::IdempotencyKeys,
        Table::FintocKeySeries,
        Table::Results,
        Table::FetchJobs,
        Table::WebhookEvents,
    ];

    /// Its name in both databases.
    pub fn name(self) -> &'static str {
        match self {
            Table::Links => "links",
            Table::LinkTokens => "link_tokens",
            Table::Accounts => "accounts",
            Table::Movements => "movements",
            Table::RefreshIntents => "refresh_intents",
            Table::IntentAccounts => "intent_accounts",
            Table::IdempotencyKeys => "idempotency_keys",
            Table::FintocKeySeries => "fintoc_key_series",
            Table::Results => "results",
            Table::FetchJobs => "fetch_jobs",
            Table::WebhookEvents => "webhook_events",
        }
    }
}

/// A number of rows per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rows([u64; Table::ALL.len()]);

impl Rows {
    pub fn get(&self, table: Table) -> u64 {
        self.0[table as usize]
    }

    pub(in crate::store) fn set(&mut self, table: Table, n: u64) {
        self.0[table as usize] = n;
    }
}

/// What the snapshot holds, read inside its transaction before its first row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct Snapshot {
    pub rows: Rows,
    /// The oldest and newest sequence still in the log (none when retention emptied it).
    pub sequences: Option<(i64, i64)>,
    /// The newest sequence ever handed out, pruned or not: the new store continues after it.
    pub high_water: i64,
}

/// One batch of rows of one table, or the end of a table.
#[derive(Debug)]
pub(in crate::store) enum Batch {
    Links(Vec<LinkRow>),
    LinkTokens(Vec<LinkTokenRow>),
    Accounts(Vec<AccountRow>),
    Movements(Vec<MovementRow>),
    RefreshIntents(Vec<IntentRecord>),
    IntentAccounts(Vec<IntentAccountRow>),
    IdempotencyKeys(Vec<KeyRow>),
    FintocKeySeries(Vec<KeySeriesRow>),
    /// As stored, not as [`crate::domain::ResultRow`]: a payload (`detail`) crosses as the
    /// text SQLite holds, never re-serialized, and one that would not read back is carried
    /// rather than dropped.
    Results(Vec<ResultRecord>),
    FetchJobs(Vec<FetchJobRow>),
    WebhookEvents(Vec<EventRow>),
    /// Every row of this table has been sent.
    Done(Table),
}

/// What crosses from the reader to the writer: a batch, or why the reader stopped.
pub(in crate::store) type Read = Result<Batch, String>;

// The rows as both databases store them (same columns, same order).

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct LinkRow {
    pub link_id: String,
    pub token_sha256: String,
    pub rejected_at_ms: Option<Millis>,
    pub resolved_at_ms: Millis,
}

/// A sealed Link token, byte for byte: it is sealed to its Link id and key id (its
/// associated data), not to the database, so it opens on PostgreSQL under the same
/// LINK_TOKEN_KEYS.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct LinkTokenRow {
    pub link_id: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub given_at_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct AccountRow {
    pub account_id: String,
    pub link_id: String,
}

/// A movement as last pushed: without it, the first fetch after the move would push every
/// movement again as added.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct MovementRow {
    pub account_id: String,
    pub movement_id: String,
    pub link_id: String,
    pub post_date: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct IntentRecord {
    pub id: String,
    pub link_id: String,
    pub refresh_type: String,
    pub status: String,
    pub mfa_widget_token: String,
    pub created_at_ms: Millis,
    pub completed_at_ms: Option<Millis>,
    pub completed_sequence: Option<i64>,
    pub reconciled_at_ms: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct IntentAccountRow {
    pub refresh_intent_id: String,
    pub account_id: String,
    pub result_sequence: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct KeyRow {
    pub idempotency_key: String,
    pub token_sha256: String,
    pub refresh_type: String,
    pub refresh_intent_id: String,
    pub joined_existing: bool,
    pub created_at_ms: Millis,
}

/// How many Fintoc Idempotency-Keys of a caller key's series Fintoc has answered: without
/// it, a caller retrying with its key after the move would be replayed Fintoc's stored
/// answers (a 500 included) for a day.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct KeySeriesRow {
    pub idempotency_key: String,
    pub spent: i64,
    pub updated_at_ms: Millis,
}

/// A movements fetch still owed for a result: without it, the result's movements would
/// never be pushed, and an intent waiting on them never completed. Its lease is read but
/// not written (`postgres/import.rs` clears it): it was held by a SQLite process, which
/// means nothing to the replicas on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct FetchJobRow {
    pub result_sequence: i64,
    pub account_id: String,
    pub link_id: String,
    pub event_id: String,
    pub new_movements: i64,
    pub occurred_at_ms: Millis,
    pub attempts: i32,
    pub due_at_ms: Millis,
    pub lease_owner: String,
    pub lease_until_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct EventRow {
    pub id: i64,
    pub event_key: String,
    pub event_type: Option<String>,
    pub disposition: String,
    pub received_at_ms: Millis,
    pub body: Vec<u8>,
}

impl Batch {
    /// The table it belongs to, and how many rows it carries.
    pub(in crate::store) fn table_and_len(&self) -> (Table, usize) {
        match self {
            Batch::Links(rows) => (Table::Links, rows.len()),
            Batch::LinkTokens(rows) => (Table::LinkTokens, rows.len()),
            Batch::Accounts(rows) => (Table::Accounts, rows.len()),
            Batch::Movements(rows) => (Table::Movements, rows.len()),
            Batch::RefreshIntents(rows) => (Table::RefreshIntents, rows.len()),
            Batch::IntentAccounts(rows) => (Table::IntentAccounts, rows.len()),
            Batch::IdempotencyKeys(rows) => (Table::IdempotencyKeys, rows.len()),
            Batch::FintocKeySeries(rows) => (Table::FintocKeySeries, rows.len()),
            Batch::Results(rows) => (Table::Results, rows.len()),
            Batch::FetchJobs(rows) => (Table::FetchJobs, rows.len()),
            Batch::WebhookEvents(rows) => (Table::WebhookEvents, rows.len()),
            Batch::Done(table) => (*table, 0),
        }
    }
}

/// Which side a failure inside the copy came from.
#[derive(Debug)]
pub(in crate::store) enum Failed {
    Source(String),
    Target(String),
}
