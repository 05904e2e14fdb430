//! The static bearer-token check in front of RefreshService (health and reflection stay
//! open: load balancers probe health without credentials, and reflection only describes the
//! API, which is no secret).
//!
//! Tokens are compared as SHA-256 digests in constant time, against every configured token
//! without stopping at a match, so neither the timing nor the answer tells a caller how close
//! a guess was or which of the rotating tokens matched. No message quotes what was sent.

use std::sync::Arc;

use subtle::{Choice, ConstantTimeEq};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Checks `authorization: Bearer <token>` on every call it wraps.
#[derive(Clone)]
pub struct BearerAuth {
    /// SHA-256 of each accepted token; empty means the check is off.
    digests: Arc<Vec<[u8; 32]>>,
    metrics: Arc<Metrics>,
}

impl BearerAuth {
    pub fn new(tokens: &[Secret], metrics: Arc<Metrics>) -> BearerAuth {
        BearerAuth {
            digests: Arc::new(tokens.iter().map(|t| digest(t.expose())).collect()),
            metrics,
        }
    }

    /// The decision alone, for the table test: Ok, or why the call is refused.
    fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        if self.digests.is_empty() {
            return Ok(());
        }
        let value = authorization.ok_or(Refusal::Missing)?;
        let token = bearer_token(value).ok_or(Refusal::NotBearer)?;
        let presented = digest_bytes(token);
        let matched = self
            .digests
            .iter()
            .fold(Choice::from(0), |any, d| any | d.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    NotBearer,
    Wrong,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::NotBearer => "not_bearer",
            Refusal::Wrong => "wrong_token",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this server requires a bearer token: send the metadata \
                 `authorization: Bearer <token>`"
            }
            Refusal::NotBearer => "the authorization metadata must be `Bearer <token>`",
            Refusal::Wrong => "the bearer token is not accepted by this server",
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match self.check(header) {
            Ok(()) => Ok(request),
            Err(refusal) => {
                self.metrics.unauthenticated(refusal.label());
                tracing::debug!(reason = refusal.label(), "call refused: bearer token");
                Err(AppError::Unauthenticated(refusal.message().into()).into())
            }
        }
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    digest_bytes(token.as_bytes())
}

fn digest_bytes(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let metrics = Arc::new(Metrics::new());
        let tokens = [
            Secret::new("tok_old_0123456789"),
            Secret::new("tok_new_0123456789"),
        ];
        let auth = BearerAuth::new(&tokens, metrics.clone());
        let table: &[(Option<&str>, Result<(), Refusal>)] = &[
            (None, Err(Refusal::Missing)),
            (Some("Bearer tok_old_0123456789"), Ok(())),
            (Some("Bearer tok_new_0123456789"), Ok(())),
            (Some("bearer  tok_new_0123456789 "), Ok(())),
            (Some("Bearer tok_new_012345678"), Err(Refusal::Wrong)),
            (Some("Bearer "), Err(Refusal::NotBearer)),
            (Some("Basic dXNlcjpwYXNz"), Err(Refusal::NotBearer)),
            (Some("tok_old_0123456789"), Err(Refusal::NotBearer)),
            (Some(""), Err(Refusal::NotBearer)),
        ];
        for (header, expected) in table {
            assert_eq!(
                auth.check(header.map(str::as_bytes)),
                *expected,
                "{header:?}"
            );
        }
        let off = BearerAuth::new(&[], metrics);
        assert_eq!(off.check(None), Ok(()));
    }
}
