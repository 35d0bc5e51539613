//! AIP-160 filters, AIP-132 orders and AIP-158 page tokens.
//!
//! [`expr`] parses the filter language Mailroom's lists accept (comparisons, `AND`, `OR`,
//! `NOT`, parentheses) into a typed tree; [`parse_filter`] is the narrower form some lists take,
//! comparisons joined by `AND`: `state = INVITED AND name : "ann"`. Values are
//! quoted strings, numbers, `true`/`false` or bare words (enum names). Each service says which
//! fields and operators it accepts and turns the parsed [`Comparison`]s into bound SQL, so no
//! caller text ever reaches SQL. A page token is opaque to the caller: base64 of the position
//! after the last row, plus a fingerprint of the query it belongs to, so a token used with
//! another filter or order is refused instead of returning a wrong page. [`token`] is the
//! keyed form: a token signed with HMAC-SHA-256 over the query it belongs to, so a caller
//! can neither forge a position nor move a token to another query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2_lite::fingerprint;

pub mod expr;
pub mod token;
pub use expr::{parse_expr, Expr};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `:` — "has": substring match for strings.
    Has,
}

/// A value on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
    /// A bare word, such as an enum name.
    Word(String),
}

impl Value {
    /// The value as text, whichever way it was written.
    pub fn as_text(&self) -> String {
        match self {
            Value::Text(s) | Value::Word(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: String,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AipError {
    #[error("filter is malformed at character {at}: {reason}")]
    Filter { at: usize, reason: String },
    #[error("page_token is not valid for this query; start again without a page_token")]
    PageToken,
    #[error("page_size must be between 0 and {max}")]
    PageSize { max: i32 },
    #[error("order_by `{0}` is not supported")]
    OrderBy(String),
}

/// Parses a filter of comparisons joined by `AND` (an empty filter is no comparisons); `OR`,
/// `NOT` and parentheses are refused, at their position, for lists that take only this form.
pub fn parse_filter(input: &str) -> Result<Vec<Comparison>, AipError> {
    let Some(expr) = parse_expr(input)? else {
        return Ok(Vec::new());
    };
    let parts = match expr {
        Expr::And(parts) => parts,
        other => vec![other],
    };
    parts
        .into_iter()
        .map(|part| match part {
            Expr::Compare { comparison, .. } => Ok(comparison),
            other => Err(AipError::Filter {
                at: other.comparisons().first().map(|(at, _)| *at).unwrap_or(0),
                reason: "this list takes comparisons joined by AND (no OR, NOT or parentheses)"
                    .into(),
            }),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

/// Caller text as an error message may show it: at most [`SHOWN_MAX`] characters (then `…`),
/// control and other non-printing characters escaped (`\u{1b}`), so an answer, a log line or a
/// terminal never carries raw escape sequences or a caller's whole input back.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == SHOWN_MAX {
            out.push('…');
            break;
        }
        if c.is_control() || c.is_whitespace() && c != ' ' || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format characters that change how text around them reads without showing
/// themselves: bidirectional overrides and isolates, zero-width characters, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// How many characters of caller text an error shows.
pub const SHOWN_MAX: usize = 64;

fn tokenize(input: &str) -> Result<Vec<(usize, Tok)>, AipError> {
    // A control character (NUL above all, which PostgreSQL refuses in text) is refused here,
    // at its position, for every list: it never reaches SQL, and no message echoes it raw.
    if let Some((at, c)) = input
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(AipError::Filter {
            at,
            reason: format!(
                "the control character U+{:04X} is not allowed in a filter; remove it",
                u32::from(c)
            ),
        });
    }
    // Positions count characters, as a person reads the filter (not UTF-8 bytes).
    let chars: Vec<(usize, char)> = input.chars().enumerate().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(AipError::Filter {
                                at,
                                reason: "unterminated string".into(),
                            })
                        }
                        Some((_, '\\')) => {
                            if let Some((_, next)) = chars.get(i + 1) {
                                s.push(*next);
                            }
                            i += 2;
                        }
                        Some((_, ch)) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some((_, ch)) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((at, Tok::Str(s)));
            }
            '=' => {
                out.push((at, Tok::Op(Op::Eq)));
                i += 1;
            }
            '(' | ')' => {
                out.push((at, if c == '(' { Tok::Open } else { Tok::Close }));
                i += 1;
            }
            ':' => {
                out.push((at, Tok::Op(Op::Has)));
                i += 1;
            }
            '!' | '<' | '>' => {
                let next_is_eq = matches!(chars.get(i + 1), Some((_, '=')));
                let op = match (c, next_is_eq) {
                    ('!', true) => Op::Ne,
                    ('<', true) => Op::Le,
                    ('>', true) => Op::Ge,
                    ('<', false) => Op::Lt,
                    ('>', false) => Op::Gt,
                    _ => {
                        return Err(AipError::Filter {
                            at,
                            reason: "`!` must be followed by `=`".into(),
                        })
                    }
                };
                out.push((at, Tok::Op(op)));
                i += if next_is_eq { 2 } else { 1 };
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '@') => {
                let mut w = String::new();
                while let Some((_, ch)) = chars.get(i) {
                    if ch.is_alphanumeric() || matches!(ch, '_' | '.' | '-' | '@') {
                        w.push(*ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((
                    at,
                    match w.as_str() {
                        "AND" => Tok::And,
                        "OR" => Tok::Or,
                        "NOT" => Tok::Not,
                        _ => Tok::Word(w),
                    },
                ));
            }
            other => {
                return Err(AipError::Filter {
                    at,
                    reason: format!("unexpected character `{}`", shown(&other.to_string())),
                })
            }
        }
    }
    Ok(out)
}

/// Parses an AIP-132 `order_by` of one field and an optional direction — `field`,
/// `field asc` or `field desc` — with `field` naming the list's orders (`None`: not one it
/// sorts on). An empty `order_by` is the list's `default` order; more words, another
/// direction or an unknown field are refused.
pub fn parse_order<T>(
    order_by: &str,
    default: T,
    field: impl FnOnce(&str, bool) -> Option<T>,
) -> Result<T, AipError> {
    let refused = || AipError::OrderBy(shown(order_by));
    match order_by.split_whitespace().collect::<Vec<_>>().as_slice() {
        [] => Ok(default),
        [name] => field(name, false).ok_or_else(refused),
        [name, "asc"] => field(name, false).ok_or_else(refused),
        [name, "desc"] => field(name, true).ok_or_else(refused),
        _ => Err(refused()),
    }
}

/// A page size checked against the service's maximum; 0 means the default.
pub fn page_size(requested: i32, default: i32, max: i32) -> Result<i64, AipError> {
    match requested {
        n if n < 0 => Err(AipError::PageSize { max }),
        0 => Ok(i64::from(default)),
        n => Ok(i64::from(n.min(max))),
    }
}

#[derive(Serialize, Deserialize)]
struct TokenBody<P> {
    /// Fingerprint of the query (filter, order) the token belongs to.
    q: String,
    p: P,
}

/// Encodes the position after the last row of a page.
pub fn encode_page_token<P: Serialize>(query: &str, position: &P) -> String {
    let body = TokenBody {
        q: fingerprint(query),
        p: position,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a page token; an empty token is the first page (`None`).
pub fn decode_page_token<P: DeserializeOwned>(
    query: &str,
    token: &str,
) -> Result<Option<P>, AipError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| AipError::PageToken)?;
    let body: TokenBody<P> = serde_json::from_slice(&bytes).map_err(|_| AipError::PageToken)?;
    if body.q != fingerprint(query) {
        return Err(AipError::PageToken);
    }
    Ok(Some(body.p))
}

/// A short, stable fingerprint of a query string (not a security boundary: tokens carry no
/// authority, every page is still scoped and checked).
mod sha2_lite {
    pub fn fingerprint(s: &str) -> String {
        // FNV-1a, 64 bit.
        let mut hash: u64 = 0xcbf29ce484222325;
        for b in s.as_bytes() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x100000001b3);
        }
        format!("{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comparisons_joined_by_and() {
        let parsed =
            parse_filter(r#"state = INVITED AND name : "ann lee" AND admin = true"#).unwrap();
        assert_eq!(
            parsed,
            vec![
                Comparison {
                    field: "state".into(),
                    op: Op::Eq,
                    value: Value::Word("INVITED".into())
                },
                Comparison {
                    field: "name".into(),
                    op: Op::Has,
                    value: Value::Text("ann lee".into())
                },
                Comparison {
                    field: "admin".into(),
                    op: Op::Eq,
                    value: Value::Bool(true)
                },
            ]
        );
    }

    #[test]
    fn parses_ordering_operators() {
        let parsed = parse_filter("disk_mb >= 100 AND unread < 5").unwrap();
        assert_eq!(parsed[0].op, Op::Ge);
        assert_eq!(parsed[0].value, Value::Number(100.0));
        assert_eq!(parsed[1].op, Op::Lt);
    }

    #[test]
    fn rejects_malformed_filters_with_a_position() {
        for bad in [
            "state =",
            "state INVITED",
            "a = 1 b = 2",
            "name : \"open",
            "x ! 1",
            "AND",
        ] {
            assert!(
                matches!(parse_filter(bad), Err(AipError::Filter { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_query() {
        let token = encode_page_token("state = ACTIVE|last_name", &("Lee".to_string(), 42u32));
        let back: Option<(String, u32)> =
            decode_page_token("state = ACTIVE|last_name", &token).unwrap();
        assert_eq!(back, Some(("Lee".to_string(), 42)));
        let other: Result<Option<(String, u32)>, _> =
            decode_page_token("state = INVITED|last_name", &token);
        assert_eq!(other, Err(AipError::PageToken));
        let garbage: Result<Option<(String, u32)>, _> = decode_page_token("q", "!!not-base64!!");
        assert_eq!(garbage, Err(AipError::PageToken));
    }

    #[test]
    fn orders_are_one_field_and_an_optional_direction() {
        let order = |text: &str| {
            parse_order(text, ("default", false), |name, desc| match name {
                "email" => Some(("email", desc)),
                "create_time" => Some(("create_time", desc)),
                _ => None,
            })
        };
        assert_eq!(order("").unwrap(), ("default", false));
        assert_eq!(order("  ").unwrap(), ("default", false));
        assert_eq!(order("email").unwrap(), ("email", false));
        assert_eq!(order("email asc").unwrap(), ("email", false));
        assert_eq!(order(" create_time  desc ").unwrap(), ("create_time", true));
        for bad in [
            "password",
            "email sideways",
            "email DESC",
            "email asc desc",
            "asc",
        ] {
            assert_eq!(order(bad), Err(AipError::OrderBy(bad.to_owned())), "{bad}");
        }
        let long = format!("x\u{1b}[31m{}", "y".repeat(4_000));
        let Err(AipError::OrderBy(echo)) = order(&long) else {
            panic!("refused")
        };
        assert!(
            !echo.contains('\u{1b}') && echo.chars().count() <= SHOWN_MAX + 8,
            "{echo}"
        );
    }

    /// Positions count characters: after a Cyrillic value the next field is where a person
    /// counts it, not where its UTF-8 bytes put it.
    #[test]
    fn positions_count_characters_not_bytes() {
        let filter = "name = \"Работа\" AND = 1";
        match parse_filter(filter) {
            Err(AipError::Filter { at, .. }) => {
                assert_eq!(at, 20, "{filter}: bytes would say 26");
                assert_eq!(filter.chars().nth(at), Some('='), "{filter} at {at}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A NUL or an escape sequence in a filter is refused at its position, for every list,
    /// before anything reaches SQL, and no answer carries it back raw.
    #[test]
    fn control_characters_are_refused_at_their_position_and_never_echoed() {
        for (filter, at) in [("name = \"a\u{0}b\"", 9), ("\u{1b}[2J name = 1", 0)] {
            let err = parse_filter(filter).unwrap_err();
            assert_eq!(
                err,
                AipError::Filter {
                    at,
                    reason: format!(
                        "the control character U+{:04X} is not allowed in a filter; remove it",
                        u32::from(filter.chars().nth(at).unwrap())
                    ),
                }
            );
            assert!(!err.to_string().chars().any(|c| c.is_control()), "{err}");
        }
        assert!(
            parse_filter("a = 1\tAND\nb = 2").is_ok(),
            "tabs and newlines are spaces"
        );
        assert_eq!(shown("a\u{0}b"), "a\\u{0}b");
        assert_eq!(shown(&"z".repeat(100)).chars().count(), SHOWN_MAX + 1);
        // A right-to-left override would make the rest of a message read backwards.
        assert_eq!(shown("evil\u{202E}gpj.exe"), "evil\\u{202e}gpj.exe");
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0, 50, 1000).unwrap(), 50);
        assert_eq!(page_size(5000, 50, 1000).unwrap(), 1000);
        assert!(page_size(-1, 50, 1000).is_err());
    }
}
