//! Folder names between the server and people: the name a LIST response really carries
//! ([`listed_name`]: async-imap hands over a quoted name with its backslash escapes still in
//! it), INBOX, which IMAP compares without case ([`canonical`]), and the modified UTF-7 that
//! IMAP writes every other non-ASCII name in (RFC 3501 5.1.3: [`decode_utf7`] for people,
//! [`encode_utf7`] for the server).
//!
//! Invariant: the name kept for the server is exactly what the server listed (unescaped, never
//! decoded), so a command quoting it names the same folder; what people see is derived from
//! it and never sent back.

use async_imap::types::Name;

/// The one folder whose name has no case.
pub const INBOX: &str = "INBOX";

/// The folder's name as the server means it: a quoted name with its escapes taken out, an
/// atom or a literal as it came. `None` when the server sent a name that is not UTF-8 (it
/// cannot be named back to the server).
pub fn listed_name(name: &Name) -> Option<String> {
    let text = name.name();
    if text.is_empty() {
        return Some(String::new());
    }
    let raw: &[u8] = name.borrow_owner().borrow_owner();
    // A name that is valid UTF-8 is borrowed from the response itself: the byte before it
    // says how it was sent (`"` quoted, a space an atom, a line feed a literal).
    let start = raw.as_ptr() as usize;
    let at = text.as_ptr() as usize;
    // (A name that is not empty starts inside the response, never at its end.)
    if at > start && at - start < raw.len() {
        let quoted = raw[at - start - 1] == b'"';
        return Some(if quoted {
            unescape_quoted(text)
        } else {
            text.to_owned()
        });
    }
    // Not borrowed: INBOX (the parser's own spelling), or a name it repaired as UTF-8.
    (text == INBOX).then(|| INBOX.to_owned())
}

/// A quoted string's content without its escapes (`\"` is `"`, `\\` is `\`).
pub fn unescape_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `name` with INBOX in any case spelled `INBOX`; every other name as it is.
pub fn canonical(name: &str) -> &str {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX
    } else {
        name
    }
}

/// The modified BASE64 alphabet: BASE64 with `,` for `/`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn sextet(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// A name in modified UTF-7 as people read it; `None` when `raw` is not well-formed modified
/// UTF-7 (a server that sends raw UTF-8 or a stray `&`), or decodes to a control character.
pub fn decode_utf7(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'&' => {
                let end = tail.iter().position(|&c| c == b'-')?;
                let encoded = &tail[..end];
                if encoded.is_empty() {
                    out.push('&');
                } else {
                    out.push_str(&decode_segment(encoded)?);
                }
                rest = &tail[end + 1..];
            }
            0x20..=0x7e => {
                out.push(char::from(byte));
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// One `&…-` run: BASE64 of UTF-16BE, no padding, only characters that may not stand for
/// themselves (so every name has one spelling).
fn decode_segment(encoded: &[u8]) -> Option<String> {
    let mut bits: u32 = 0;
    let mut held = 0u32;
    let mut units = Vec::with_capacity(encoded.len() * 6 / 16);
    for &c in encoded {
        bits = (bits << 6) | sextet(c)?;
        held += 6;
        if held >= 16 {
            held -= 16;
            units.push(u16::try_from(bits >> held).ok()?);
            bits &= (1 << held) - 1;
        }
    }
    // What is left over is padding: fewer than six bits, all zero.
    if held >= 6 || bits != 0 {
        return None;
    }
    let text = String::from_utf16(&units).ok()?;
    let canonical = !text.is_empty()
        && !text
            .chars()
            .any(|c| (' '..='~').contains(&c) || c.is_control());
    canonical.then_some(text)
}

/// `name` in modified UTF-7, as a server expects it.
pub fn encode_utf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush_utf16(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush_utf16(&mut pending, &mut out);
    out
}

fn flush_utf16(units: &mut Vec<u16>, out: &mut String) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let mut bits: u32 = 0;
    let mut held = 0u32;
    for unit in units.drain(..) {
        bits = (bits << 16) | u32::from(unit);
        held += 16;
        while held >= 6 {
            held -= 6;
            out.push(char::from(ALPHABET[((bits >> held) & 0x3f) as usize]));
        }
        bits &= (1 << held) - 1;
    }
    if held > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - held)) & 0x3f) as usize]));
    }
    out.push('-');
}

/// What people see of a folder named `raw` on the server: decoded from modified UTF-7, or
/// `raw` itself when it is not that.
pub fn display_name(raw: &str) -> String {
    decode_utf7(raw).unwrap_or_else(|| raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf7_round_trips_and_matches_the_rfc() {
        // RFC 3501 5.1.3's example, and what Dovecot lists for "Работа".
        assert_eq!(
            decode_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Some("~peter/mail/台北/日本語")
        );
        assert_eq!(decode_utf7("&BCAEMAQxBD4EQgQw-").as_deref(), Some("Работа"));
        for name in [
            "INBOX",
            "Работа",
            "Tom & Jerry",
            "&",
            "Проекты/2024 & далее",
            "emoji 📬 box",
            "台北",
            "Client \"ACME\" (2026)",
        ] {
            let encoded = encode_utf7(name);
            assert!(
                encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "{encoded}"
            );
            assert_eq!(decode_utf7(&encoded).as_deref(), Some(name), "{encoded}");
        }
        assert_eq!(encode_utf7("Работа"), "&BCAEMAQxBD4EQgQw-");
        assert_eq!(encode_utf7("A&B"), "A&-B");
    }

    #[test]
    fn what_is_not_modified_utf7_is_shown_as_it_is() {
        for raw in [
            "A&B",         // a stray ampersand
            "&BCA",        // never closed
            "&AEE-",       // "A" encoded: not the one spelling
            "&AAA-",       // a NUL
            "Работа",      // raw UTF-8
            "&BCAEMA/-",   // `/` is not in the alphabet
            "&BCAEMAQxB-", // leftover bits that are not zero
        ] {
            assert_eq!(decode_utf7(raw), None, "{raw}");
            assert_eq!(display_name(raw), raw);
        }
    }

    #[test]
    fn inbox_has_no_case_and_quoted_escapes_come_out() {
        assert_eq!(canonical("inbox"), "INBOX");
        assert_eq!(canonical("InBoX"), "INBOX");
        assert_eq!(canonical("inbox/Work"), "inbox/Work");
        assert_eq!(
            unescape_quoted(r#"Client \"ACME\" (2026)"#),
            r#"Client "ACME" (2026)"#
        );
        assert_eq!(unescape_quoted(r"back\\slash"), r"back\slash");
    }
}

#[cfg(test)]
mod listed {
    use futures::StreamExt;

    use super::*;
    use crate::imap::connect;
    use crate::testing::{self, line_server};

    /// A server whose LIST names folders in each way IMAP can: quoted with escapes, as an
    /// atom, as a literal (whose backslashes are the name's own), INBOX in lower case.
    async fn listing_server() -> std::net::SocketAddr {
        let (addr, _) = line_server("* OK fake IMAP ready\r\n", |line| {
            let mut words = line.split_whitespace();
            let (tag, command) = (words.next().unwrap_or("*"), words.next().unwrap_or(""));
            match command.to_ascii_uppercase().as_str() {
                "LOGIN" => format!("{tag} OK logged in\r\n"),
                "LIST" => format!(
                    "* LIST () \"/\" inbox\r\n\
                     * LIST () \"/\" \"Client \\\"ACME\\\" (2026)\"\r\n\
                     * LIST () \"/\" \"back\\\\slash\"\r\n\
                     * LIST () \"/\" &BCAEMAQxBD4EQgQw-\r\n\
                     * LIST () \"/\" {{9}}\r\nlit\\\"eral\r\n\
                     {tag} OK done\r\n"
                ),
                "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
                _ => format!("{tag} BAD unknown\r\n"),
            }
        })
        .await;
        addr
    }

    #[tokio::test]
    async fn the_listed_name_is_the_one_the_server_means() {
        let addr = listing_server().await;
        let connector = testing::connector(true, std::time::Duration::from_secs(5));
        let login = testing::login("127.0.0.1", addr.port(), crate::login::Security::None);
        let mut session = connect(&connector, &login).await.expect("logged in");
        let mut names = Vec::new();
        {
            let mut stream = session.list(Some(""), Some("*")).await.expect("LIST");
            while let Some(name) = stream.next().await {
                names.push(listed_name(&name.expect("a name")));
            }
        }
        assert_eq!(
            names,
            vec![
                Some("INBOX".to_owned()),
                Some(r#"Client "ACME" (2026)"#.to_owned()),
                Some(r"back\slash".to_owned()),
                Some("&BCAEMAQxBD4EQgQw-".to_owned()),
                Some(r#"lit\"eral"#.to_owned()),
            ]
        );
        assert_eq!(display_name(names[3].as_deref().unwrap_or("")), "Работа");
    }
}
