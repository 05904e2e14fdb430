//! End-to-end tests: the real server on port 0 with a fresh store, called over real gRPC
//! and real HTTP. Tests whose outcome depends on storage run once per backend (SQLite and
//! PostgreSQL) through `on_both_backends!`.

// First: its macros are in scope only in the modules declared after it.
#[macro_use]
mod common;
mod alerting;
#[path = "../support/binary.rs"]
mod binary;
mod cli;
mod client;
mod copy_store;
mod create_marks;
mod delivery;
mod deploy;
mod faults;
mod feeds;
mod filters;
mod hostile;
mod intake;
mod layers;
mod library;
mod links;
mod movements;
mod pg;
mod pg_tls;
#[path = "../support/pgbouncer.rs"]
mod pgbouncer;
mod pooler;
mod private_pg;
mod process;
mod proxy;
mod reflection;
mod refresh;
mod replica_faults;
mod replicas;
mod sdk;
mod secrets;
mod simulator;
mod stream_age;
mod tls;
mod traces;
mod wal;
mod watch;
