//! The gRPC side: RefreshService (behind the bearer-token check in `auth`) plus the standard
//! health and reflection services.

pub mod auth;
pub mod codec;
pub mod convert;
mod service;
pub mod watch;

pub use service::Service;
