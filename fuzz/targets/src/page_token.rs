//! Any bytes as the `page_token` a caller sends back: the signed tokens
//! (`mailroom_aip::token::PageTokenKey`, the mailbox list and the message list) and the legacy
//! unsigned ones (`mailroom_aip::decode_page_token`, the other lists).
//!
//! Asserted: decoding never panics; a token this key did not sign is refused whatever it
//! holds (the fuzzer cannot sign, so any position it gets accepted is a forgery), and so is a
//! signed token with any byte changed, cut short, or used for another query or with another
//! key; a signed token for a position the fuzzer chose decodes back to that position; an
//! unsigned token decodes back for its own query only.

use mailroom_aip::token::{PageTokenKey, MAX_TOKEN_LEN};
use mailroom_aip::{decode_page_token, encode_page_token, AipError};
use serde_json::Value;

use crate::split_two;

const KEY: &[u8] = b"fuzz page tokens: the fuzzer never sees this key";
const OTHER_KEY: &[u8] = b"another replica's key, or another service's one";

/// A position shaped like the lists' (a sort value and an id).
type Position = (String, i64);

pub fn page_token(data: &[u8]) {
    let key = PageTokenKey::new(KEY);
    let text = String::from_utf8_lossy(data);
    forged(&key, &text);

    let (query, position) = split_two(data);
    let query = String::from_utf8_lossy(query);
    let (number, value) = match position.split_first_chunk::<8>() {
        Some((number, value)) => (i64::from_le_bytes(*number), value),
        None => (0, position),
    };
    let position: Position = (String::from_utf8_lossy(value).into_owned(), number);
    signed(&key, &query, &position, data.first().copied().unwrap_or(0));
    unsigned(&query, &position);
}

/// The fuzzer's bytes as a token: nothing but the empty token may be accepted.
fn forged(key: &PageTokenKey, token: &str) {
    let as_value = key.decode::<Value>("q", token);
    let as_position = key.decode::<Position>("q", token);
    if token.is_empty() {
        assert_eq!(as_value, Ok(None));
        assert_eq!(as_position, Ok(None));
    } else {
        assert_eq!(
            as_value,
            Err(AipError::PageToken),
            "a forged token was accepted: {token:?}"
        );
        assert_eq!(
            as_position,
            Err(AipError::PageToken),
            "a forged token was accepted: {token:?}"
        );
    }
    // Legacy tokens are not signed (a caller can write one): decoding must not panic, and
    // what decodes encodes back to a token that decodes the same.
    if let Ok(Some(value)) = decode_page_token::<Value>("q", token) {
        let again = encode_page_token("q", &value);
        assert_eq!(decode_page_token::<Value>("q", &again), Ok(Some(value)));
    }
}

fn signed(key: &PageTokenKey, query: &str, position: &Position, choice: u8) {
    let token = key.encode(query, position);
    if token.len() > MAX_TOKEN_LEN {
        // Too long to be accepted back: refused, not decoded.
        assert_eq!(
            key.decode::<Position>(query, &token),
            Err(AipError::PageToken)
        );
        return;
    }
    assert_eq!(
        key.decode::<Position>(query, &token).as_ref(),
        Ok(&Some(position.clone())),
        "a signed token did not decode back"
    );
    let refused = |query: &str, token: &str, what: &str| {
        let decoded = key.decode::<Position>(query, token);
        assert_eq!(
            decoded,
            Err(AipError::PageToken),
            "{what} was accepted: {token:?}"
        );
    };
    refused(&format!("{query}\0"), &token, "a token for another query");
    if let Some((last, _)) = query.char_indices().last() {
        refused(&query[..last], &token, "a token for a shorter query");
    }
    assert_eq!(
        PageTokenKey::new(OTHER_KEY).decode::<Position>(query, &token),
        Err(AipError::PageToken),
        "a token signed with another key was accepted"
    );
    // One byte changed, wherever the fuzzer says, to anything a token may hold or not.
    let at = usize::from(choice) % token.len();
    for replacement in [b'A', b'_', b'-', b'.', b'=', b'0'] {
        let mut edited = token.clone().into_bytes();
        if edited[at] == replacement {
            continue;
        }
        edited[at] = replacement;
        let edited = String::from_utf8(edited).unwrap_or_default();
        refused(query, &edited, "an edited token");
    }
    if at > 0 {
        // (The empty token is the first page.)
        refused(query, &token[..at], "a token cut short");
    }
}

fn unsigned(query: &str, position: &Position) {
    let token = encode_page_token(query, position);
    assert_eq!(
        decode_page_token::<Position>(query, &token).as_ref(),
        Ok(&Some(position.clone())),
        "an unsigned token did not decode back"
    );
    assert_eq!(
        decode_page_token::<Position>(&format!("{query} "), &token),
        Err(AipError::PageToken),
        "an unsigned token was accepted for another query"
    );
}
