//! The gRPC side: RefreshService plus the standard health and reflection services.

pub mod codec;
pub mod convert;
mod service;
pub mod watch;

pub use service::Service;
