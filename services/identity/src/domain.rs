//! Values that come from outside, parsed once into types that cannot hold a bad value.
//!
//! An [`EmailAddress`] is what Mailroom compares and stores: the local part lower-cased, the
//! domain in lower-case ASCII (IDN domains converted to punycode). Anything a mail header could
//! be injected with (CR, LF, other control characters, angle brackets, commas, quotes) is
//! refused, as are addresses over the RFC 5321 length limits.

use std::fmt;

use mailroom_platform::email;
use mailroom_platform::text::{canonical, check_visible, Use};

/// The most characters of a person's first or last name.
pub const NAME_MAX: usize = 100;
/// The most characters of a position (job title).
pub const POSITION_MAX: usize = 200;
/// The most characters of an organisation's or a department's name.
pub const UNIT_NAME_MAX: usize = 200;

/// Why an input was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{field}` is required")]
    Missing { field: &'static str },
    #[error("`{field}` is not a valid email address: {reason}")]
    Email {
        field: &'static str,
        reason: &'static str,
    },
    #[error("`{field}` {reason}")]
    Text {
        field: &'static str,
        reason: &'static str,
    },
    #[error("`{field}` {reason}")]
    Unicode {
        field: &'static str,
        reason: mailroom_platform::text::Invisible,
    },
    #[error("password must be {min} to {max} characters long")]
    PasswordLength { min: usize, max: usize },
}

/// A parsed, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses user input for the field named `field` (used in the error message).
    pub fn parse(field: &'static str, input: &str) -> Result<Self, ParseError> {
        email::normalise(input).map(Self).map_err(|e| match e {
            email::EmailError::Missing => ParseError::Missing { field },
            email::EmailError::Invalid(reason) => ParseError::Email { field, reason },
            email::EmailError::Unicode(reason) => ParseError::Unicode { field, reason },
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// An address that takes the place of one transferred away; it can never be a real one
    /// (`.invalid` is reserved by RFC 2606).
    pub fn tombstone() -> Self {
        Self(format!(
            "released-{}@tombstone.invalid",
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Trusts a value read back from our own database.
    pub(crate) fn from_stored(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's name, position or department name: one line of printable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// Parses `input` for `field`: in NFC, trimmed, every kind of space one ASCII space, at
    /// most `max` characters; no control, invisible or bidi-control characters.
    pub fn parse(
        field: &'static str,
        input: &str,
        max: usize,
        required: bool,
    ) -> Result<Self, ParseError> {
        if input
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
        {
            return Err(ParseError::Text {
                field,
                reason: "cannot contain line breaks or control characters",
            });
        }
        check_visible(input, Use::Name).map_err(|reason| ParseError::Unicode { field, reason })?;
        let spaced = one_space(&canonical(input));
        let trimmed = spaced.trim();
        if required && trimmed.is_empty() {
            return Err(ParseError::Missing { field });
        }
        if trimmed.chars().count() > max {
            return Err(ParseError::Text {
                field,
                reason: "is too long",
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Every run of white space (any kind: no-break, ideographic, …) as one ASCII space, so that
/// names which look alike are alike.
fn one_space(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut in_space = false;
    for c in input.chars() {
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
    out
}

/// A new password as the user chose it; checked for length only (NIST 800-63B).
pub struct NewPassword(String);

impl NewPassword {
    pub const MIN: usize = mailroom_platform::types::PasswordPolicy::MIN;
    pub const MAX: usize = mailroom_platform::types::PasswordPolicy::MAX;

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let n = input.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&n) {
            return Err(ParseError::PasswordLength {
                min: Self::MIN,
                max: Self::MAX,
            });
        }
        Ok(Self(input.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

/// The life of a user account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Invited,
    Active,
    Dismissed,
}

impl UserState {
    pub fn as_db(self) -> &'static str {
        match self {
            UserState::Invited => "invited",
            UserState::Active => "active",
            UserState::Dismissed => "dismissed",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "active" => UserState::Active,
            "dismissed" => UserState::Dismissed,
            _ => UserState::Invited,
        }
    }

    /// Parses a filter value: `INVITED` or `USER_STATE_INVITED`, any case.
    pub fn from_filter(value: &str) -> Option<Self> {
        let upper = value.to_ascii_uppercase();
        match upper.strip_prefix("USER_STATE_").unwrap_or(&upper) {
            "INVITED" => Some(UserState::Invited),
            "ACTIVE" => Some(UserState::Active),
            "DISMISSED" => Some(UserState::Dismissed),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            UserState::Invited => "invited",
            UserState::Active => "active",
            UserState::Dismissed => "dismissed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_idn_domains() {
        let a = EmailAddress::parse("email", "  Ann.Lee@ACME.Test ").unwrap();
        assert_eq!(a.as_str(), "ann.lee@acme.test");
        let idn = EmailAddress::parse("email", "ivan@пример.рф").unwrap();
        assert_eq!(idn.as_str(), "ivan@xn--e1afmkfd.xn--p1ai");
        assert_eq!(idn.domain(), "xn--e1afmkfd.xn--p1ai");
    }

    #[test]
    fn look_alike_unicode_forms_are_one_address_and_invisible_ones_are_refused() {
        let nfc = EmailAddress::parse("email", "jos\u{e9}@acme.test").unwrap();
        let nfd = EmailAddress::parse("email", "jose\u{301}@acme.test").unwrap();
        assert_eq!(nfc, nfd);
        let idn_nfd = EmailAddress::parse("email", "ann@cafe\u{301}.test").unwrap();
        let idn_nfc = EmailAddress::parse("email", "ann@caf\u{e9}.test").unwrap();
        assert_eq!(idn_nfd, idn_nfc);
        for bad in [
            "ann\u{200B}@acme.test",
            "ann@ac\u{200B}me.test",
            "ann\u{200D}lee@acme.test",
            "ann\u{202E}eel@acme.test",
            "\u{FEFF}ann@acme.test",
        ] {
            let err = EmailAddress::parse("email", bad).unwrap_err();
            assert!(matches!(err, ParseError::Unicode { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn names_are_nfc_with_one_kind_of_space_and_nothing_invisible() {
        let a = Text::parse("first_name", "Jose\u{301}\u{a0}\u{a0}Mar\u{ed}a", 100, true).unwrap();
        assert_eq!(a.as_str(), "Jos\u{e9} Mar\u{ed}a");
        for bad in ["Ann\u{200B}", "Ann\u{2067}Lee", "\u{3164}", "Ann\u{AD}Lee"] {
            let err = Text::parse("first_name", bad, 100, true).unwrap_err();
            assert!(matches!(err, ParseError::Unicode { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn refuses_header_injection_and_malformed_addresses() {
        for bad in [
            "ann@acme.test\r\nBcc: all@acme.test",
            "ann@acme.test\n",
            "Ann <ann@acme.test>",
            "ann,bob@acme.test",
            "ann@acme",
            "@acme.test",
            "ann@",
            "ann",
            "a..b@acme.test",
            ".ann@acme.test",
            "ann@-acme.test",
            "ann@[127.0.0.1]",
            "\"ann\"@acme.test",
            "ann lee@acme.test",
        ] {
            assert!(
                EmailAddress::parse("email", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let long_local = format!("{}@acme.test", "a".repeat(65));
        assert!(EmailAddress::parse("email", &long_local).is_err());
        let long_domain = format!("a@{}.test", "b".repeat(250));
        assert!(EmailAddress::parse("email", &long_domain).is_err());
    }

    #[test]
    fn tombstones_are_unique_and_reserved() {
        let a = EmailAddress::tombstone();
        let b = EmailAddress::tombstone();
        assert_ne!(a, b);
        assert!(a.as_str().ends_with("@tombstone.invalid"));
    }

    #[test]
    fn text_refuses_line_breaks() {
        assert!(Text::parse("first_name", "Ann\r\nBcc: x", 100, true).is_err());
        assert!(Text::parse("first_name", "   ", 100, true).is_err());
        assert_eq!(
            Text::parse("first_name", " Ann ", 100, true)
                .unwrap()
                .as_str(),
            "Ann"
        );
        assert!(Text::parse("position", &"x".repeat(101), 100, false).is_err());
    }

    #[test]
    fn password_length_is_checked() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse("long enough").is_ok());
        assert!(!format!("{:?}", NewPassword::parse("long enough").unwrap()).contains("long"));
    }
}
