//! A refresh intent as the service knows it: what registering one needs ([`NewIntent`]) and
//! where it stands ([`IntentView`]), which is what GetRefresh and `refresh_completed` carry.

use super::log::ResultRow;
use super::status::{IntentStatus, RefreshType};
use crate::clock::Millis;

/// An intent Fintoc has created (or adopted from elsewhere), about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    pub id: String,
    pub link_id: String,
    pub refresh_type: RefreshType,
    /// Every account of the Link: one result is expected from each.
    pub accounts: Vec<String>,
    pub created_at_ms: Millis,
    pub mfa_widget_token: String,
}

/// An intent with where each expected account stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    pub id: String,
    pub link_id: String,
    pub refresh_type: RefreshType,
    pub status: IntentStatus,
    pub mfa_widget_token: String,
    pub created_at_ms: Millis,
    /// When it reached its final status by Fintoc's account: the latest `occurred_at` of its
    /// results (never after the moment it was recorded). Cooldowns count from it.
    pub completed_at_ms: Option<Millis>,
    /// The sequence of the result that completed it.
    pub completed_sequence: Option<i64>,
    /// One per expected account, by account id; `result` is None while pending.
    pub accounts: Vec<AccountState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub account_id: String,
    pub result: Option<ResultRow>,
}
