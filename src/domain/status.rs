//! Refresh types and statuses as closed enums, with their database text forms, and the rule
//! that turns per-account results into an intent's final status.

use std::fmt;

/// An unknown text value read from storage or from Fintoc: never silently defaulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// How far back a refresh goes (Fintoc `refresh_type` / `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshType {
    OnlyLast,
    Historical,
}

impl RefreshType {
    /// Fintoc's and our database's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshType::OnlyLast => "only_last",
            RefreshType::Historical => "historical",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "only_last" => Ok(RefreshType::OnlyLast),
            "historical" => Ok(RefreshType::Historical),
            other => Err(UnknownValue {
                kind: "refresh type",
                value: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for RefreshType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one account's refresh, as it appears in the result log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultStatus {
    Succeeded,
    Failed,
    Rejected,
    /// No result arrived before the refresh timeout; synthesized by this service.
    TimedOut,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
            ResultStatus::Rejected => "rejected",
            ResultStatus::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "succeeded" => Ok(ResultStatus::Succeeded),
            "failed" => Ok(ResultStatus::Failed),
            "rejected" => Ok(ResultStatus::Rejected),
            "timed_out" => Ok(ResultStatus::TimedOut),
            other => Err(UnknownValue {
                kind: "result status",
                value: other.to_owned(),
            }),
        }
    }
}

/// Where a whole intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntentStatus {
    Pending,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::Pending => "pending",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Failed => "failed",
            IntentStatus::Rejected => "rejected",
            IntentStatus::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "pending" => Ok(IntentStatus::Pending),
            "succeeded" => Ok(IntentStatus::Succeeded),
            "failed" => Ok(IntentStatus::Failed),
            "rejected" => Ok(IntentStatus::Rejected),
            "timed_out" => Ok(IntentStatus::TimedOut),
            other => Err(UnknownValue {
                kind: "intent status",
                value: other.to_owned(),
            }),
        }
    }

    pub fn is_final(self) -> bool {
        self != IntentStatus::Pending
    }
}

/// The intent's status given each expected account's result (`None` = still missing).
///
/// Pending while any account is missing. Otherwise the precedence is REJECTED (the Link
/// needs reconnecting, the most actionable news) > FAILED (retry now) > TIMED_OUT > SUCCEEDED
/// (every expected account succeeded). An intent that expects no account has nothing to
/// wait for and succeeds.
pub fn intent_status<I>(results: I) -> IntentStatus
where
    I: IntoIterator<Item = Option<ResultStatus>>,
{
    let (mut rejected, mut failed, mut timed_out) = (false, false, false);
    for result in results {
        match result {
            None => return IntentStatus::Pending,
            Some(ResultStatus::Rejected) => rejected = true,
            Some(ResultStatus::Failed) => failed = true,
            Some(ResultStatus::TimedOut) => timed_out = true,
            Some(ResultStatus::Succeeded) => {}
        }
    }
    if rejected {
        IntentStatus::Rejected
    } else if failed {
        IntentStatus::Failed
    } else if timed_out {
        IntentStatus::TimedOut
    } else {
        IntentStatus::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntentStatus as I;
    use ResultStatus::*;

    #[test]
    fn completion_precedence_table() {
        let table: &[(&[Option<ResultStatus>], IntentStatus)] = &[
            (&[], I::Succeeded),
            (&[Some(Succeeded)], I::Succeeded),
            (
                &[Some(Succeeded), Some(Succeeded), Some(Succeeded)],
                I::Succeeded,
            ),
            (&[None], I::Pending),
            (&[Some(Succeeded), None], I::Pending),
            (&[Some(Rejected), None], I::Pending),
            (&[Some(Failed), Some(Succeeded)], I::Failed),
            (&[Some(TimedOut), Some(Succeeded)], I::TimedOut),
            (&[Some(TimedOut), Some(Failed)], I::Failed),
            (&[Some(Failed), Some(TimedOut)], I::Failed),
            (&[Some(Rejected), Some(Failed)], I::Rejected),
            (&[Some(Failed), Some(Rejected)], I::Rejected),
            (&[Some(TimedOut), Some(Rejected)], I::Rejected),
            (
                &[
                    Some(Rejected),
                    Some(Succeeded),
                    Some(TimedOut),
                    Some(Failed),
                ],
                I::Rejected,
            ),
            (&[Some(TimedOut), Some(TimedOut)], I::TimedOut),
        ];
        for (results, want) in table {
            assert_eq!(intent_status(results.iter().copied()), *want, "{results:?}");
        }
    }

    #[test]
    fn text_forms_round_trip_and_reject_unknown() {
        for t in [RefreshType::OnlyLast, RefreshType::Historical] {
            assert_eq!(RefreshType::parse(t.as_str()), Ok(t));
        }
        for s in [Succeeded, Failed, Rejected, TimedOut] {
            assert_eq!(ResultStatus::parse(s.as_str()), Ok(s));
        }
        for s in [
            I::Pending,
            I::Succeeded,
            I::Failed,
            I::Rejected,
            I::TimedOut,
        ] {
            assert_eq!(IntentStatus::parse(s.as_str()), Ok(s));
        }
        assert!(RefreshType::parse("weekly").is_err());
        assert!(ResultStatus::parse("pending").is_err());
        assert!(IntentStatus::parse("").is_err());
    }
}
