//! End-to-end tests: the real server on port 0 with a fresh SQLite file, called over real
//! gRPC and real HTTP.

mod common;
mod intake;
mod process;
mod refresh;
mod sdk;
mod tls;
mod watch;
