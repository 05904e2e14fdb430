//! Reading Fintoc's answers: its error envelope, a body of the expected shape (a malformed
//! one described without its text, which could hold a secret), a list, and the next page in
//! a `Link` header.

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::FintocError;

#[derive(Debug, Deserialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    error_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
}

pub(super) fn api_error(status: StatusCode, body: &[u8]) -> FintocError {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => FintocError::Api {
            status: status.as_u16(),
            error_type: error.error_type.unwrap_or_default(),
            code: error.code.unwrap_or_default(),
            message: error.message.unwrap_or_default(),
            param: error.param.unwrap_or_default(),
        },
        Err(_) => FintocError::Api {
            status: status.as_u16(),
            error_type: String::new(),
            code: String::new(),
            message: status.canonical_reason().unwrap_or("error").to_owned(),
            param: String::new(),
        },
    }
}

pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FintocError> {
    serde_json::from_slice(body).map_err(malformed)
}

/// Where and what kind of JSON problem, never the offending text (it could be a secret).
pub(super) fn malformed(e: serde_json::Error) -> FintocError {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    FintocError::Malformed(format!("{kind} (line {}, column {})", e.line(), e.column()))
}

/// Lists are bare arrays; tolerate a `{"data": [...]}` wrapper too. (Not an untagged enum:
/// that buffers the input and breaks `RawValue` items.)
pub(super) fn decode_list<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, FintocError> {
    #[derive(Deserialize)]
    struct Wrapped<T> {
        data: Vec<T>,
    }
    let starts_with_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if starts_with_array {
        decode(body)
    } else {
        decode::<Wrapped<T>>(body).map(|w| w.data)
    }
}

/// The `rel="next"` URL of an RFC 8288 `Link` header.
pub(super) fn next_url(headers: &HeaderMap) -> Option<Url> {
    let header = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") {
            return None;
        }
        Url::parse(url.trim().trim_start_matches('<').trim_end_matches('>')).ok()
    })
}
