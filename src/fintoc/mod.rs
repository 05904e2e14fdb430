//! Everything that speaks Fintoc: the webhook signature scheme, the event payloads, and the
//! REST client.

pub mod client;
pub mod event;
pub mod signature;

#[cfg(test)]
mod properties;
