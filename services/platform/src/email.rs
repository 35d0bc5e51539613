//! Email addresses and host names as every Mailroom service accepts them.
//!
//! [`normalise`] gives the form Mailroom compares and stores: the local part lower-cased and in
//! NFC, the domain in lower-case ASCII (IDN domains as punycode, UTS #46). Anything a mail
//! header could be injected with (CR, LF, other control characters, angle brackets, commas,
//! quotes) is refused, as are addresses over the RFC 5321 length limits and characters a
//! reader cannot see ([`crate::text`]). [`host`] checks a server host name or IP literal.

use crate::text::{canonical, check_visible, Invisible, Use};

/// Why an address was refused, in words for the person who typed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("it is empty")]
    Missing,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Unicode(Invisible),
}

const FORBIDDEN_LOCAL: &[char] = &[
    '<', '>', '(', ')', '[', ']', '\\', ',', ';', ':', '"', '@', ' ',
];

fn has_control(input: &str) -> bool {
    input
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// The stored form of an address typed by a person.
pub fn normalise(input: &str) -> Result<String, EmailError> {
    use EmailError::Invalid;
    if has_control(input) {
        return Err(Invalid("it contains a line break or control character"));
    }
    check_visible(input, Use::Address).map_err(EmailError::Unicode)?;
    // Look-alike forms (NFC vs NFD) are one address.
    let input = canonical(input);
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Missing);
    }
    if trimmed.len() > 254 {
        return Err(Invalid("it is longer than 254 characters"));
    }
    let (typed_local, domain) = trimmed.rsplit_once('@').ok_or(Invalid("it has no `@`"))?;
    if typed_local.is_empty() {
        return Err(Invalid("nothing stands before the `@`"));
    }
    // Checked in the form stored: lower-casing can lengthen it (`İ` is two bytes, `i̇` three),
    // and a stored address must parse again as itself.
    let local = canonical(&typed_local.to_lowercase());
    if local.len() > 64 {
        return Err(Invalid(
            "the part before the `@` is longer than 64 characters",
        ));
    }
    if local
        .chars()
        .any(|c| FORBIDDEN_LOCAL.contains(&c) || c.is_whitespace())
    {
        return Err(Invalid("the part before the `@` has a character addresses cannot hold (space, quote, comma, angle bracket, …)"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(Invalid(
            "dots cannot start, end or repeat in the part before the `@`",
        ));
    }
    let domain = domain_name(domain).map_err(Invalid)?;
    let normalised = format!("{local}@{domain}");
    if normalised.len() > 254 {
        return Err(Invalid("it is longer than 254 characters"));
    }
    Ok(normalised)
}

/// The domain of a stored address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
}

/// A domain name in lower-case ASCII (IDN domains as punycode).
pub fn domain_name(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("nothing stands after the `@`");
    }
    if domain.starts_with('[') {
        return Err("IP-address domains are not accepted");
    }
    let ascii =
        idna::domain_to_ascii(domain).map_err(|_| "the domain is not a valid domain name")?;
    if ascii.len() > 253 {
        return Err("the domain is longer than 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs a dot, as in example.com");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("a part of the domain is empty or longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part of the domain starts or ends with a hyphen");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the domain has a character domains cannot hold");
        }
    }
    Ok(ascii.to_ascii_lowercase())
}

/// A server's host: an IP address, or a host name (one label is enough: `localhost`, an
/// in-cluster service name), in lower-case ASCII.
pub fn host(input: &str) -> Result<String, &'static str> {
    if has_control(input) {
        return Err("the host contains a line break or control character");
    }
    let input = input.trim();
    if input.is_empty() {
        return Err("the host is empty");
    }
    if input.chars().any(char::is_whitespace) {
        return Err("the host contains a space");
    }
    let bare = input.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    let ascii = idna::domain_to_ascii(input).map_err(|_| "the host is not a valid host name")?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err("the host name is empty or longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("the host name has an empty part or a character host names cannot hold");
        }
    }
    Ok(ascii.to_ascii_lowercase())
}

/// One line of printable text (a mailbox or sender name): NFC, trimmed, every run of white
/// space one ASCII space, at most `max` characters; no control, invisible or bidi-control
/// characters, so nothing can be injected into a mail header.
pub fn one_line(input: &str, max: usize) -> Result<String, &'static str> {
    if has_control(input) {
        return Err("cannot contain line breaks or control characters");
    }
    if check_visible(input, Use::Name).is_err() {
        return Err("contains an invisible or text-direction character; retype it without");
    }
    let mut out = String::with_capacity(input.len());
    let mut in_space = false;
    for c in canonical(input).chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    let trimmed = out.trim();
    if trimmed.chars().count() > max {
        return Err("is too long");
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_and_refuse_what_headers_could_be_injected_with() {
        assert_eq!(normalise(" Ann@Example.COM ").unwrap(), "ann@example.com");
        assert_eq!(normalise("ann@bücher.de").unwrap(), "ann@xn--bcher-kva.de");
        assert_eq!(normalise(""), Err(EmailError::Missing));
        for bad in [
            "ann",
            "@x.com",
            "a b@x.com",
            "ann@x.com\r\nBcc: z@y.com",
            "a..b@x.com",
            "ann@x",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(domain_of("ann@example.com"), "example.com");
    }

    /// Found by the `address` fuzz target: `İ` lower-cases to `i` and a combining dot, one
    /// byte longer, so 64 typed bytes were stored as 65, which no longer parsed (a person
    /// created so could never sign in with the address they were given).
    #[test]
    fn a_stored_address_parses_again_as_itself() {
        let long = format!("{}@x.com", "\u{130}".repeat(32));
        assert!(normalise(&long).is_err(), "{long} was stored");
        let fits = format!("{}a@x.com", "\u{130}".repeat(21));
        let stored = normalise(&fits).unwrap();
        assert_eq!(stored.split_once('@').unwrap().0.len(), 64);
        assert_eq!(normalise(&stored).as_deref(), Ok(stored.as_str()));
    }

    #[test]
    fn hosts_are_names_or_ip_literals() {
        assert_eq!(host("IMAP.Example.com").unwrap(), "imap.example.com");
        assert_eq!(host("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(host("[::1]").unwrap(), "::1");
        assert_eq!(host("dovecot").unwrap(), "dovecot");
        for bad in [
            "",
            "imap example.com",
            "imap.example.com\r\n",
            "-x.com",
            "a..b",
        ] {
            assert!(host(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn one_line_text_collapses_spaces_and_refuses_breaks() {
        assert_eq!(
            one_line("  Sales \u{00A0} team ", 40).unwrap(),
            "Sales team"
        );
        assert!(one_line("Sales\r\nBcc: x", 40).is_err());
        assert!(one_line("a\u{202E}b", 40).is_err());
        assert!(one_line(&"x".repeat(41), 40).is_err());
    }
}
