//! The IO-free core: the closed sets of states, the completion rule, correlation of an
//! account event to the intent waiting for it, and the cooldown/hold policy. Everything here
//! is a pure function of its inputs (time included), so it is tested as tables.

pub mod correlate;
pub mod policy;
pub mod status;

pub use status::{IntentStatus, RefreshType, ResultStatus};
