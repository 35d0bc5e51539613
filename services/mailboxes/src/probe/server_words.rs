//! An IMAP failure in words a person reads. async-imap words a server's NO or BAD as program
//! text (`code: None, info: Some("[AUTHENTICATIONFAILED] …")`, read back into the server's
//! words by the mail layer's [`refusal`]) and an answer it could not parse as its parser's
//! debug output (`Error(Error { input: [108, 111, …] })`, read back here). Either way the
//! server's own words are quoted and trimmed ([`mailroom_mail::one_line`]); whatever else the
//! mail layer says is a sentence already and passes as it is.

use async_imap::error::{Error as ProtocolError, ParseError};
use mailroom_mail::imap::{refusal, ImapError, Refusal};
use mailroom_mail::one_line;

/// The most characters (or bytes) of a server's answer read back: `one_line` keeps fewer, and
/// the answer a parser repeats may be long.
const READ_BACK: usize = 400;

/// `text` flattened onto one line, trimmed and bounded, in double quotes.
pub(super) fn quoted(text: &str) -> String {
    format!("\"{}\"", one_line(text))
}

/// What went wrong with an IMAP login, in plain words.
pub(super) fn imap(err: &ImapError) -> String {
    match err {
        ImapError::LoginRefused(text) => match said(&refusal::from_said(false, text)) {
            Some(words) => format!("the server said {words}"),
            None => "the server refused the login without a reason".to_owned(),
        },
        ImapError::LoginBad(text) => format!(
            "LOGIN was refused as a bad command{}; the server may want TLS first",
            said(&refusal::from_said(true, text))
                .map(|words| format!(" ({words})"))
                .unwrap_or_default()
        ),
        ImapError::Login(err) => protocol(err),
        ImapError::StartTls(err) => format!("the server refused STARTTLS: {}", protocol(err)),
        ImapError::Greeting(err) => format!("no IMAP greeting: {}", io(err)),
        other => one_line(&other.to_string()),
    }
}

/// A refusal's words (`[CODE] text`) quoted; `None` when the server gave none.
fn said(refusal: &Refusal) -> Option<String> {
    let words = refusal.to_string();
    (!words.is_empty()).then(|| quoted(&words))
}

/// An async-imap failure in plain words.
fn protocol(err: &ProtocolError) -> String {
    if let Some(refused) = refusal::refusal(err) {
        let verb = if refused.bad { "BAD" } else { "NO" };
        return match said(&refused) {
            Some(words) => format!("the server answered {verb} {words}"),
            None => format!("the server answered {verb} without a reason"),
        };
    }
    match err {
        ProtocolError::Io(err) => io(err),
        ProtocolError::ConnectionLost => {
            "the connection closed before the server answered".to_owned()
        }
        ProtocolError::Parse(ParseError::Invalid(bytes)) => not_imap(&lossy(bytes)),
        ProtocolError::Parse(ParseError::DataNotUtf8(bytes, _)) => format!(
            "the server sent text that is not UTF-8: {}",
            quoted(&lossy(bytes))
        ),
        ProtocolError::Parse(_) => "the server's answer is not what IMAP expects here".to_owned(),
        // Never the character: it may be the password's.
        ProtocolError::Validate(_) => {
            "the username or password holds a character IMAP cannot send".to_owned()
        }
        other => one_line(&other.to_string()),
    }
}

/// A read that failed: async-imap reports a line it could not parse as the parser's debug
/// output, then the line (`Error(Error { input: [..], code: Tag }) during parsing of "…"`).
fn io(err: &std::io::Error) -> String {
    let text = err.to_string();
    if let Some((_, line)) = text.split_once(" during parsing of ") {
        return not_imap(&debug_string(line));
    }
    if let Some(bytes) = debug_bytes(&text) {
        return not_imap(&lossy(&bytes));
    }
    one_line(&text)
}

/// The start of `bytes` as text.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(READ_BACK)]).into_owned()
}

fn not_imap(answer: &str) -> String {
    if one_line(answer).is_empty() {
        "the server's answer is not IMAP".to_owned()
    } else {
        format!("the server's answer is not IMAP: {}", quoted(answer))
    }
}

/// The text of the Rust debug string literal `text` starts with (`"a \"b\""` → `a "b"`), at
/// most [`READ_BACK`] characters of it; one cut short (no closing quote) to its end.
fn debug_string(text: &str) -> String {
    let mut chars = text.strip_prefix('"').unwrap_or(text).chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if out.len() >= READ_BACK {
            break;
        }
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('u') => {
                    let hex: String = chars
                        .by_ref()
                        .skip_while(|c| *c == '{')
                        .take_while(|c| *c != '}')
                        .collect();
                    out.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or(char::REPLACEMENT_CHARACTER),
                    );
                }
                Some(other) => out.push(other),
                None => {}
            },
            c => out.push(c),
        }
    }
    out
}

/// The bytes of a parser's debug output (`input: [108, 111, …]`), as far as it goes.
fn debug_bytes(text: &str) -> Option<Vec<u8>> {
    let (_, list) = text.split_once("input: [")?;
    let list = list.split(']').next().unwrap_or(list);
    let bytes: Vec<u8> = list
        .split(',')
        .map_while(|n| n.trim().parse::<u8>().ok())
        .take(READ_BACK)
        .collect();
    (!bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_the_servers_words_quoted() {
        let refused = ImapError::LoginRefused(
            r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#.into(),
        );
        assert_eq!(
            imap(&refused),
            r#"the server said "[AUTHENTICATIONFAILED] Authentication failed.""#
        );
        let alert = ImapError::LoginRefused(
            r#"code: Some(Alert), info: Some("Say \"hi\"\r\nfirst")"#.into(),
        );
        assert_eq!(imap(&alert), r#"the server said "[ALERT] Say "hi"  first""#);
        let silent = ImapError::LoginRefused("code: None, info: None".into());
        assert_eq!(
            imap(&silent),
            "the server refused the login without a reason"
        );
        // Words already plain pass as they are.
        let plain = ImapError::LoginRefused("[AUTHENTICATIONFAILED] no".into());
        assert_eq!(
            imap(&plain),
            r#"the server said "[AUTHENTICATIONFAILED] no""#
        );
        let bad = ImapError::LoginBad("Error in IMAP command".into());
        assert_eq!(
            imap(&bad),
            r#"LOGIN was refused as a bad command ("Error in IMAP command"); the server may want TLS first"#
        );
        assert_eq!(
            imap(&ImapError::StartTls(ProtocolError::No(
                r#"code: None, info: Some("not now")"#.into()
            ))),
            r#"the server refused STARTTLS: the server answered NO "not now""#
        );
    }

    #[test]
    fn a_line_that_is_not_imap_is_quoted_not_dumped() {
        let parsed = std::io::Error::other(
            r#"Error(Error { input: [108, 111, 108, 13, 10], code: Tag }) during parsing of "lol\r\n""#,
        );
        assert_eq!(
            imap(&ImapError::Greeting(parsed)),
            r#"no IMAP greeting: the server's answer is not IMAP: "lol""#
        );
        // Without the line (cut off): the bytes themselves.
        let bytes_only = std::io::Error::other("Error(Error { input: [108, 111, 108, 32, 33, …");
        assert_eq!(
            imap(&ImapError::Login(ProtocolError::Io(bytes_only))),
            r#"the server's answer is not IMAP: "lol !""#
        );
        assert_eq!(
            imap(&ImapError::Login(ProtocolError::ConnectionLost)),
            "the connection closed before the server answered"
        );
        assert_eq!(
            imap(&ImapError::Login(ProtocolError::Parse(
                ParseError::Invalid(b"* what\r\n".to_vec())
            ))),
            r#"the server's answer is not IMAP: "* what""#
        );
    }

    #[test]
    fn debug_strings_unescape() {
        assert_eq!(
            debug_string(r#""a \"b\" \\ \u{1b}c" tail"#),
            "a \"b\" \\ \u{1b}c"
        );
        assert_eq!(debug_string(r#""unclosed"#), "unclosed");
        let long = format!("\"{}\"", "x".repeat(10_000));
        assert_eq!(debug_string(&long).len(), READ_BACK);
    }
}
