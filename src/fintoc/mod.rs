//! Everything that speaks Fintoc: the webhook signature scheme, the event payloads, the REST
//! client, and what its failures mean to our callers.

pub mod client;
pub mod error;
pub mod event;
pub mod signature;

#[cfg(test)]
mod properties;
