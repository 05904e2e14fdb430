//! The unit tests of `client.rs`.

use super::*;
use reqwest::StatusCode;

#[test]
fn decodes_error_envelopes_by_code() {
    let body = br#"{"error":{"type":"invalid_request_error","code":"refresh_intent_in_progress","message":"There is already a refresh intent in progress for link_00000000.","param":null,"doc_url":"https://docs.fintoc.com/reference/errors","new":1}}"#;
    let e = api_error(StatusCode::BAD_REQUEST, body);
    assert_eq!(e.code(), Some("refresh_intent_in_progress"));
    assert!(!e.retryable());
    let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
    assert_eq!(e.code(), Some(""));
    assert!(e.retryable());
    let cooldown = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"error":{"type":"invalid_request_error","code":"rate_limit_exceeded","message":"wait"}}"#,
    );
    assert!(
        !cooldown.retryable(),
        "the refresh cooldown is not congestion"
    );
    let throttled = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"error":{"code":"too_many_requests"}}"#,
    );
    assert!(throttled.retryable());
}

#[test]
fn follows_the_link_header() {
    let link = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::LINK, HeaderValue::from_str(v).unwrap());
        h
    };
    let h = link(r#"<https://api.fintoc.com/v2/events?starting_after=evt_9>; rel="next""#);
    assert_eq!(
        read_events_page(b"[]", &h).unwrap().1.as_deref(),
        Some("evt_9")
    );
    let h = link(
        r#"<https://api.fintoc.com/v1/links?page=1>; rel="first", <https://api.fintoc.com/v1/links?page=2>; rel="next""#,
    );
    assert_eq!(
        next_url(&h).unwrap().as_str(),
        "https://api.fintoc.com/v1/links?page=2"
    );
    let h = link(
        r#"<https://api.fintoc.com/v1/links?page=1>; rel="first", <https://api.fintoc.com/v1/links?page=2>; rel="last""#,
    );
    assert_eq!(next_url(&h), None);
    assert_eq!(read_events_page(b"[]", &h).unwrap().1, None);
}

#[test]
fn lists_bare_or_wrapped() {
    let raw = decode_list::<Box<serde_json::value::RawValue>>(br#" [{"id": "evt_1"}]"#).unwrap();
    assert_eq!(raw[0].get(), r#"{"id": "evt_1"}"#);
    assert_eq!(decode_list::<u8>(b"[1,2]").unwrap(), vec![1, 2]);
    assert_eq!(decode_list::<u8>(br#"{"data":[3]}"#).unwrap(), vec![3]);
    assert!(decode_list::<u8>(b"{}").is_err());
}

#[test]
fn path_segments_are_encoded() {
    assert_eq!(encode_segment("link_a_token_b"), "link_a_token_b");
    assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
}

#[test]
fn backoff_doubles_with_jitter() {
    for (attempt, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16)] {
        let b = backoff(Duration::from_secs(1), attempt);
        assert!(
            b >= Duration::from_secs(base) && b < Duration::from_secs(base + 1),
            "{attempt}: {b:?}"
        );
    }
}
