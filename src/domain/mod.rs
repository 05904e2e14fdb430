//! The IO-free core: the closed sets of states, the completion rule, correlation of an
//! account event to the intent waiting for it, the cooldown/hold policy, and the plain data
//! the layers above hand each other (log entries, intents). Everything here is a pure
//! function of its inputs (time included), so it is tested as tables.

pub mod correlate;
pub mod intent;
pub mod log;
pub mod movement;
pub mod policy;
pub mod status;

pub use intent::{AccountState, IntentView, NewIntent};
pub use log::{Detail, ResultRow, Selection, Target, UnavailableEntry};
pub use movement::{Movement, MovementsEntry, TransferAccount, Unavailable};
pub use status::{IntentStatus, RefreshType, ResultStatus};
