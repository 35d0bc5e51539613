//! A server's refusal of a command (a tagged NO or BAD) in plain words: async-imap hands it
//! over as Rust debug text (`code: None, info: Some("[NONEXISTENT] Mailbox doesn't exist")`, or
//! `outcome: Outcome { code: None, information: Some(…) }` from EXAMINE and STATUS),
//! which is no message for a person. [`refusal`] reads the server's own words back out of it,
//! with its response code (RFC 5530) apart, so a caller can tell a refusal that may pass
//! ([`Refusal::is_temporary`]) from one that will not, and quote the server.

use std::fmt;

use crate::text::one_line;

/// What the server said when it refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// BAD (the command was not understood) rather than NO.
    pub bad: bool,
    /// The response code in capitals without its brackets (`NONEXISTENT`, `AUTHENTICATIONFAILED`),
    /// when the server gave one.
    pub code: Option<String>,
    /// The server's text after the code, on one line and bounded.
    pub text: String,
}

impl Refusal {
    /// Whether the server says the refusal may pass if the command is tried again later
    /// (RFC 5530's UNAVAILABLE, INUSE, SERVERBUG and LIMIT).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("UNAVAILABLE" | "INUSE" | "SERVERBUG" | "LIMIT")
        )
    }
}

impl fmt::Display for Refusal {
    /// The server's words: `[CODE] text`, or either alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, self.text.is_empty()) {
            (Some(code), true) => write!(f, "[{code}]"),
            (Some(code), false) => write!(f, "[{code}] {}", self.text),
            (None, _) => f.write_str(&self.text),
        }
    }
}

/// The refusal `err` carries, if it is a NO or a BAD.
pub fn refusal(err: &async_imap::error::Error) -> Option<Refusal> {
    use async_imap::error::Error;
    let (bad, said) = match err {
        Error::No(said) => (false, said),
        Error::Bad(said) => (true, said),
        _ => return None,
    };
    Some(from_said(bad, said))
}

/// The refusal in async-imap's text for it (any text that is not its debug form is taken as
/// the server's words).
pub fn from_said(bad: bool, said: &str) -> Refusal {
    let (known_code, info) = split_debug(said).unwrap_or((None, said.to_owned()));
    let info = info.trim();
    // Codes async-imap does not know stay at the start of the text.
    let (code, text) = match info.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, rest)) if !code.is_empty() => (Some(code.to_owned()), rest),
        _ => (known_code, info),
    };
    Refusal {
        bad,
        code: code.map(|c| {
            let word = c.split_whitespace().next().unwrap_or_default();
            one_line(&word.to_ascii_uppercase())
        }),
        text: one_line(text),
    }
}

/// async-imap's two spellings of a refusal, `code: …, info: …` and
/// `outcome: Outcome { code: …, information: … }`, split into the code's name (when it parsed
/// one) and the text.
fn split_debug(said: &str) -> Option<(Option<String>, String)> {
    let (code, separator) = match said.strip_prefix("outcome: Outcome { code: ") {
        Some(rest) => (rest.strip_suffix(" }")?, ", information: "),
        None => (said.strip_prefix("code: ")?, ", info: "),
    };
    // The first separator after which a whole debug string follows (a code's own text cannot
    // end that way: its quotes would be escaped).
    let mut from = 0;
    while let Some(found) = code[from..].find(separator) {
        let at = from + found;
        let rest = &code[at + separator.len()..];
        let info = match rest {
            "None" => Some(String::new()),
            _ => rest
                .strip_prefix("Some(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(undebug),
        };
        if let Some(info) = info {
            return Some((code_name(&code[..at]), info));
        }
        from = at + 1;
    }
    None
}

/// The name of a code as async-imap debug-prints it: `Some(Alert)` is `ALERT`,
/// `Some(UidNext(4))` is `UIDNEXT`.
fn code_name(debug: &str) -> Option<String> {
    let inner = debug.strip_prefix("Some(")?.strip_suffix(')')?;
    let name: String = inner
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_uppercase())
}

/// A string in Rust's debug notation (`"…"` with `\"`, `\\`, `\n`, `\u{…}` escapes), unquoted.
fn undebug(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_words_come_out_of_async_imaps_debug_text() {
        let r = from_said(
            false,
            r#"code: None, info: Some("[NONEXISTENT] Mailbox doesn't exist: Client \"ACME\"")"#,
        );
        assert_eq!(r.code.as_deref(), Some("NONEXISTENT"));
        assert_eq!(r.text, r#"Mailbox doesn't exist: Client "ACME""#);
        assert!(!r.is_temporary());
        assert_eq!(
            r.to_string(),
            r#"[NONEXISTENT] Mailbox doesn't exist: Client "ACME""#
        );

        let r = from_said(
            false,
            r#"code: None, info: Some("[AUTHENTICATIONFAILED]\tInvalid credentials\r\n")"#,
        );
        assert_eq!(r.to_string(), "[AUTHENTICATIONFAILED] Invalid credentials");

        let r = from_said(
            true,
            r#"code: Some(Alert), info: Some("System going down")"#,
        );
        assert!(r.bad);
        assert_eq!(r.to_string(), "[ALERT] System going down");

        // The spelling of async-imap's EXAMINE and STATUS.
        let r = from_said(
            false,
            r#"outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: Old (0.001 + 0.000 secs).") }"#,
        );
        assert_eq!(
            (r.code, r.text.as_str()),
            (None, "Mailbox doesn't exist: Old (0.001 + 0.000 secs).")
        );

        let r = from_said(false, "code: None, info: None");
        assert_eq!((r.code, r.text.as_str()), (None, ""));

        let r = from_said(
            false,
            r#"code: None, info: Some("[UNAVAILABLE] Try later \u{1b}")"#,
        );
        assert!(r.is_temporary());
        assert!(!r.text.chars().any(char::is_control), "{r:?}");
    }

    #[test]
    fn text_that_is_not_debug_notation_is_taken_as_it_is() {
        let r = from_said(false, "[INUSE] Mailbox is locked");
        assert_eq!(r.code.as_deref(), Some("INUSE"));
        assert!(r.is_temporary());
        // A text that merely looks like the notation inside is not cut at a false boundary.
        let r = from_said(false, r#"code: None, info: Some("a, info: Some(\"b\")")"#);
        assert_eq!(r.text, r#"a, info: Some("b")"#);
    }
}
