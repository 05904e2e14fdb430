//! `GET /v1/accounts/{id}/movements`, every page, read so that a list shifting under the
//! reader loses nothing (fintoc-api.md §8, §9).
//!
//! Fintoc's v1 lists are offset-paginated: page 2 is "items 301 to 600 as the list is now".
//! A movement landing at the top after page 1 was read pushes page 1's last item onto page 2,
//! where it is read again; a movement removed ahead of the reader pulls page 2's first item
//! onto page 1, already read, so it is never seen. Either way the list changed during the
//! read. An id seen twice in one pass is the evidence we get, so then the whole list is read
//! again, up to [`MAX_PASSES`] passes, and the passes are united by id (a later pass's
//! content wins, as it is newer).
//!
//! Why that catches a skipped movement: a movement is skipped only by a change made while a
//! pass is under way. A pass read while the list stands still sees every movement in it, so
//! once a pass sees no id twice, it (with the earlier passes) holds everything. What this
//! cannot see is a pass shifted only by removals (nothing is read twice); a movement skipped
//! that way was listed before and after, so the next listing of the account finds it — the
//! caller compares by id with what it stored, so it is reported then, once. [`Listing::settled`]
//! says whether the last pass was clean.
//!
//! Retries and 429: each page goes through the client's [`Client::call_with`], whose schedule
//! already is Fintoc's for 429 (the client's backoff unit × 1, 2, 4, 8, 16, plus up to one
//! unit of jitter, at most 5 retries), bounded by the caller's deadline. Here every 429 is
//! congestion: the one 429 that is not (`rate_limit_exceeded`, the refresh cooldown) belongs
//! to refresh intents.
//!
//! Secrets: the link token goes only in the first page's query and in the next URLs Fintoc
//! hands back; no error carries a URL, and any error text that quotes the token has it
//! replaced before it is logged or returned.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use time::Date;
use time::macros::format_description;

use super::decode::decode_list;
use super::{CallOptions, Client, FintocError, encode_segment};
use crate::domain::movement::Movement;
use crate::secret::Secret;

/// Passes over the whole list at most: a list that keeps shifting is returned as read, with
/// [`Listing::settled`] false.
pub const MAX_PASSES: u32 = 3;
/// Fintoc's largest page: the fewer pages, the fewer chances to shift between them.
const PER_PAGE: &str = "300";

/// An account's movements as listed by [`Client::list_movements`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Each movement once (by id), in the order first seen; its content from the last pass
    /// that saw it.
    pub movements: Vec<Movement>,
    /// HTTP requests sent, retries included (for the caller's rate accounting).
    pub requests: u32,
    /// Passes over the list: 1, or more when it shifted while read.
    pub passes: u32,
    /// Whether the last pass saw no id twice: false only when all [`MAX_PASSES`] passes saw
    /// the list shift (the caller may try again later).
    pub settled: bool,
}

impl Client {
    /// `GET /v1/accounts/{account_id}/movements?link_token=…&since=…[&until=…]&per_page=300
    /// &confirmed_only=false`: every movement of the account posted on or after `since`
    /// (and before `until`, exclusive), pending, reversed and duplicated ones included,
    /// following the `Link` header's `rel="next"` URL verbatim. When an id comes twice in a
    /// pass (the list shifted while read), the whole list is read again; see the module's
    /// documentation. `deadline` bounds the whole listing, retries and passes included; a
    /// full 429 schedule at the default 1 s unit takes about 36 s.
    ///
    /// Errors: [`FintocError::is_invalid_link_token`] tells when Fintoc refused the token;
    /// a movement without an id is [`FintocError::Malformed`]. No error carries the token.
    pub async fn list_movements(
        &self,
        link_token: &Secret,
        account_id: &str,
        since: Date,
        until: Option<Date>,
        deadline: Instant,
    ) -> Result<Listing, FintocError> {
        let url = self.url(&format!(
            "v1/accounts/{}/movements",
            encode_segment(account_id)
        ))?;
        let mut query = vec![
            ("link_token", link_token.expose().to_owned()),
            ("since", iso_date(since)),
        ];
        if let Some(until) = until {
            query.push(("until", iso_date(until)));
        }
        query.push(("per_page", PER_PAGE.to_owned()));
        query.push(("confirmed_only", "false".to_owned()));

        let mut options = CallOptions {
            every_429_is_congestion: true,
            redact: Some(link_token),
            ..CallOptions::default()
        };
        let mut listing = Listing::default();
        let mut position: HashMap<String, usize> = HashMap::new();
        loop {
            listing.passes += 1;
            let pass = self
                .movements_pass(url.clone(), &query, deadline, &mut options)
                .await?;
            for movement in pass.movements {
                match position.get(&movement.id) {
                    Some(&at) => listing.movements[at] = movement,
                    None => {
                        position.insert(movement.id.clone(), listing.movements.len());
                        listing.movements.push(movement);
                    }
                }
            }
            listing.requests = options.requests;
            listing.settled = !pass.shifted;
            if listing.settled || listing.passes >= MAX_PASSES {
                if !listing.settled {
                    tracing::warn!(
                        account_id,
                        passes = listing.passes,
                        "the movements list kept shifting while read; returning the union of every pass"
                    );
                }
                return Ok(listing);
            }
            tracing::info!(
                account_id,
                pass = listing.passes,
                "the movements list shifted while read (an id came twice); reading it again"
            );
        }
    }

    /// One pass: the first page at `url` with `query`, then each `rel="next"` URL verbatim.
    async fn movements_pass(
        &self,
        mut url: Url,
        query: &[(&str, String)],
        deadline: Instant,
        options: &mut CallOptions<'_>,
    ) -> Result<Pass, FintocError> {
        let mut pass = Pass::default();
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut visited: HashSet<Url> = HashSet::new();
        let mut query = query;
        loop {
            let (page, next) = self
                .call_with(
                    "list_movements",
                    Method::GET,
                    url,
                    query,
                    None,
                    deadline,
                    options,
                    read_movements_page,
                )
                .await?;
            for movement in page {
                match position.get(&movement.id) {
                    Some(&at) => {
                        pass.shifted = true;
                        pass.movements[at] = movement;
                    }
                    None => {
                        position.insert(movement.id.clone(), pass.movements.len());
                        pass.movements.push(movement);
                    }
                }
            }
            let Some(next) = next else {
                return Ok(pass);
            };
            let next = self.next_page(next, "movements")?;
            // A next link back to a page this pass already followed would never end.
            if !visited.insert(next.clone()) {
                return Err(FintocError::Malformed(
                    "the movements list's next page leads back to a page already read".into(),
                ));
            }
            url = next;
            query = &[];
        }
    }
}

/// What one pass read: each id once, and whether one came twice.
#[derive(Default)]
struct Pass {
    movements: Vec<Movement>,
    shifted: bool,
}

/// One page: its movements (each must have an id) and the next page's URL.
fn read_movements_page(
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(Vec<Movement>, Option<Url>), FintocError> {
    let items: Vec<serde_json::Value> = decode_list(body)?;
    let movements = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // Where, never what: the item's text could hold account numbers.
            Movement::from_fintoc(item).ok_or_else(|| {
                FintocError::Malformed(format!(
                    "movement {} of a page has no id or an unexpected shape",
                    i + 1
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((movements, super::decode::next_url(headers)))
}

/// `YYYY-MM-DD`, as Fintoc's `since`/`until` take it.
fn iso_date(date: Date) -> String {
    date.format(format_description!("[year]-[month]-[day]"))
        .expect("a calendar date formats")
}

#[cfg(test)]
mod tests;
