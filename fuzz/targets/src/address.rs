//! Any bytes as an address, a domain, a server host or a one-line name, as callers type them
//! into every service (`mailroom_platform::email`).
//!
//! Asserted, for whatever is accepted: parsing what was accepted gives it back unchanged (the
//! stored form is a fixed point, so a stored address always parses again and compares equal);
//! an address is within the RFC 5321 lengths, holds one `@`, no character a mail header could
//! be injected with and no space, and its domain is lower-case ASCII that parses as a domain;
//! a host is lower-case ASCII without spaces; a one-line name is at most its maximum in
//! characters, with no control character, no leading, trailing or doubled space.

use mailroom_platform::email;

/// What the local part of a stored address never holds.
const FORBIDDEN_LOCAL: &[char] = &[
    '<', '>', '(', ')', '[', ']', '\\', ',', ';', ':', '"', '@', ' ',
];

pub fn address(data: &[u8]) {
    let (max, text) = match data.split_first() {
        Some((&max, rest)) => (usize::from(max), rest),
        None => (0, data),
    };
    let input = String::from_utf8_lossy(text);
    let input = input.as_ref();

    if let Ok(stored) = email::normalise(input) {
        check_address(input, &stored);
    }
    if let Ok(domain) = email::domain_name(input) {
        check_domain(input, &domain);
    }
    if let Ok(host) = email::host(input) {
        assert!(
            host.is_ascii() && !host.chars().any(char::is_whitespace),
            "host {input:?} became {host:?}"
        );
        assert!(
            !host.chars().any(|c| c.is_ascii_uppercase()),
            "host {input:?} became {host:?}, not lower-case"
        );
        assert_eq!(
            email::host(&host).as_ref(),
            Ok(&host),
            "the host {input:?} was stored as {host:?}, which does not parse back to itself"
        );
    }
    if let Ok(line) = email::one_line(input, max) {
        assert!(
            line.chars().count() <= max,
            "{line:?} is longer than {max} characters"
        );
        assert!(
            !line.chars().any(char::is_control),
            "a control character passed: {line:?}"
        );
        assert!(
            line.trim() == line && !line.contains("  "),
            "spaces were not collapsed: {line:?}"
        );
        assert_eq!(
            email::one_line(&line, max).as_deref(),
            Ok(line.as_str()),
            "the name {input:?} was stored as {line:?}, which does not parse back to itself"
        );
    }
}

fn check_address(input: &str, stored: &str) {
    assert!(
        stored.len() <= 254,
        "{input:?} was stored as {stored:?}, longer than 254 bytes"
    );
    let (local, domain) = stored
        .split_once('@')
        .unwrap_or_else(|| panic!("{input:?} was stored as {stored:?}, without an `@`"));
    assert!(
        !local.is_empty() && local.len() <= 64,
        "{input:?} was stored with a local part of {} bytes: {stored:?}",
        local.len()
    );
    assert!(
        !local
            .chars()
            .any(|c| FORBIDDEN_LOCAL.contains(&c) || c.is_whitespace() || c.is_control()),
        "{input:?} was stored with a character headers could be injected with: {stored:?}"
    );
    assert!(
        !local.starts_with('.') && !local.ends_with('.') && !local.contains(".."),
        "{input:?} was stored with stray dots: {stored:?}"
    );
    check_domain(input, domain);
    assert_eq!(email::domain_of(stored), domain);
    assert_eq!(
        email::normalise(stored).as_deref(),
        Ok(stored),
        "{input:?} was stored as {stored:?}, which does not parse back to itself"
    );
}

fn check_domain(input: &str, domain: &str) {
    assert!(
        domain.is_ascii()
            && domain.len() <= 253
            && !domain
                .chars()
                .any(|c| c.is_ascii_uppercase() || c.is_whitespace()),
        "{input:?} gave the domain {domain:?}"
    );
    assert_eq!(
        email::domain_name(domain).as_deref(),
        Ok(domain),
        "{input:?} gave the domain {domain:?}, which does not parse back to itself"
    );
}
