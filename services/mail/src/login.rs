//! Where and as whom to log in to a mail server. The password is held as a secret: it goes
//! to the server and nowhere else (never a `Debug` line, an error or a span).

use std::fmt;

use secrecy::SecretString;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// Plain text (local servers and tests).
    None,
    /// Plain text, then STARTTLS before anything else is said.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

impl Security {
    /// `none`, `starttls` or `tls`, as configuration and the registry's rows spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::StartTls => "starttls",
            Security::Tls => "tls",
        }
    }

    /// The security `text` names (exactly one of [`Security::as_str`]'s spellings).
    pub fn parse(text: &str) -> Option<Security> {
        match text {
            "none" => Some(Security::None),
            "starttls" => Some(Security::StartTls),
            "tls" => Some(Security::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server and the account to log in to it with.
#[derive(Clone)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: SecretString,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_spellings_round_trip_and_nothing_else_parses() {
        for s in [Security::None, Security::StartTls, Security::Tls] {
            assert_eq!(Security::parse(s.as_str()), Some(s));
        }
        assert_eq!(Security::parse("TLS"), None);
        assert_eq!(Security::parse(""), None);
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let login = Login {
            host: "imap.example.com".into(),
            port: 993,
            security: Security::Tls,
            username: "ann".into(),
            password: SecretString::from("hunter2-secret"),
        };
        let shown = format!("{login:?}");
        assert!(shown.contains("imap.example.com"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
