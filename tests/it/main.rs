//! End-to-end tests: the real server on port 0 with a fresh SQLite file, called over real
//! gRPC and real HTTP.

mod client;
mod common;
mod copy_store;
mod delivery;
mod faults;
mod hostile;
mod intake;
mod layers;
mod pg;
mod postgres;
mod process;
mod reflection;
mod refresh;
mod replicas;
mod sdk;
mod secrets;
mod simulator;
mod tls;
mod watch;
