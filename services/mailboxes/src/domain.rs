//! A mailbox's inputs, parsed once into types that cannot hold a bad value: the address, its
//! server settings, its names, its CRM settings. Every message names the field.

use mailroom_platform::email;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_types::UserId;

/// Why an input was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{field}` is required")]
    Missing { field: String },
    #[error("`{field}` {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> ParseError {
    ParseError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The longest mailbox or sender name.
pub const MAX_NAME: usize = 200;
/// The longest server username.
pub const MAX_USERNAME: usize = 320;
/// The longest password accepted (servers take far less; this only bounds the input).
pub const MAX_PASSWORD: usize = 1024;
/// The most users in one CRM queue.
pub const MAX_QUEUE: usize = 100;

/// The longest sync error stored from the sync service's report.
pub const MAX_SYNC_ERROR: usize = 1_000;

/// Text from elsewhere (a report, a server's words) as the registry stores or shows it: at
/// most `max` characters (then `…`), control characters escaped.
pub fn clipped(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A mailbox address in its stored form (see `platform::email`).
pub fn address(field: &str, input: &str) -> Result<String, ParseError> {
    email::normalise(input).map_err(|e| match e {
        email::EmailError::Missing => ParseError::Missing {
            field: field.to_owned(),
        },
        other => invalid(field, format!("is not a valid email address: {other}")),
    })
}

/// A mailbox or sender name: one line, at most [`MAX_NAME`] characters, may be empty.
pub fn name(field: &str, input: &str) -> Result<String, ParseError> {
    email::one_line(input, MAX_NAME).map_err(|reason| invalid(field, reason))
}

/// A user's id (surrounding spaces ignored).
pub fn user_id(field: &str, input: &str) -> Result<UserId, ParseError> {
    if input.trim().is_empty() {
        return Err(ParseError::Missing {
            field: field.to_owned(),
        });
    }
    input.trim().parse().map_err(|_| {
        invalid(
            field,
            format!("is not a user id: \"{}\"", mailroom_aip::shown(input)),
        )
    })
}

pub fn password(field: &str, input: &str) -> Result<secrecy::SecretString, ParseError> {
    if input.is_empty() {
        return Err(ParseError::Missing {
            field: field.to_owned(),
        });
    }
    if input.len() > MAX_PASSWORD {
        return Err(invalid(
            field,
            format!("is longer than {MAX_PASSWORD} bytes"),
        ));
    }
    if input.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(invalid(field, "cannot contain line breaks or NUL"));
    }
    Ok(secrecy::SecretString::from(input.to_owned()))
}

/// How a server connection is secured: the mail layer's one type; the wire's and the rows'
/// spellings of it are below.
pub use mailroom_mail::Security;

/// The wire's security; unspecified means TLS.
pub fn security_from_proto(value: i32) -> Security {
    match pb::Security::try_from(value).unwrap_or(pb::Security::Unspecified) {
        pb::Security::None => Security::None,
        pb::Security::Starttls => Security::StartTls,
        pb::Security::Tls | pb::Security::Unspecified => Security::Tls,
    }
}

pub fn security_to_proto(security: Security) -> pb::Security {
    match security {
        Security::None => pb::Security::None,
        Security::StartTls => pb::Security::Starttls,
        Security::Tls => pb::Security::Tls,
    }
}

/// A row's security (written by [`Security::as_str`]); anything else reads as TLS.
pub fn security_from_stored(text: &str) -> Security {
    Security::parse(text).unwrap_or(Security::Tls)
}

/// Where and as whom to log in to one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
}

/// Which server a settings block is for (the default port follows it).
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Imap,
    Smtp,
}

impl ServerSettings {
    /// Parses `field` (`imap` or `smtp`); the username defaults to `address`, the port to the
    /// protocol's usual one for the security chosen.
    pub fn parse(
        field: &str,
        protocol: Protocol,
        input: Option<&pb::ServerSettings>,
        address: &str,
    ) -> Result<Self, ParseError> {
        let input = input.ok_or_else(|| ParseError::Missing {
            field: field.to_owned(),
        })?;
        let host = email::host(&input.host).map_err(|r| invalid(&format!("{field}.host"), r))?;
        let security = security_from_proto(input.security);
        let port = match input.port {
            0 => match (protocol, security) {
                (Protocol::Imap, Security::Tls) => 993,
                (Protocol::Imap, _) => 143,
                (Protocol::Smtp, Security::Tls) => 465,
                (Protocol::Smtp, _) => 587,
            },
            p @ 1..=65535 => p as u16,
            other => {
                return Err(invalid(
                    &format!("{field}.port"),
                    format!("must be between 1 and 65535, not {other}"),
                ))
            }
        };
        let username = input.username.trim();
        if username.len() > MAX_USERNAME || username.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid(
                &format!("{field}.username"),
                format!("must be one word of at most {MAX_USERNAME} bytes, without spaces or control characters"),
            ));
        }
        Ok(Self {
            host,
            port,
            security,
            username: if username.is_empty() {
                address.to_owned()
            } else {
                username.to_owned()
            },
        })
    }

    pub fn to_proto(&self) -> pb::ServerSettings {
        pb::ServerSettings {
            host: self.host.clone(),
            port: i32::from(self.port),
            security: security_to_proto(self.security) as i32,
            username: self.username.clone(),
        }
    }
}

/// The CRM settings: whether the mailbox feeds the CRM, and who gets its leads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Crm {
    pub in_crm: bool,
    pub queue: Vec<UserId>,
}

impl Crm {
    pub fn parse(input: Option<&pb::CrmSettings>) -> Result<Self, ParseError> {
        let Some(input) = input else {
            return Ok(Crm::default());
        };
        if input.queue_user_ids.len() > MAX_QUEUE {
            return Err(invalid(
                "crm.queue_user_ids",
                format!("holds at most {MAX_QUEUE} users"),
            ));
        }
        let mut queue = Vec::with_capacity(input.queue_user_ids.len());
        for (i, id) in input.queue_user_ids.iter().enumerate() {
            let id = user_id(&format!("crm.queue_user_ids[{i}]"), id)?;
            if !queue.contains(&id) {
                queue.push(id);
            }
        }
        Ok(Crm {
            in_crm: input.in_crm,
            queue,
        })
    }
}

/// Sync states as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Pending,
    Ok,
    Syncing,
    AuthFailed,
    Error,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Ok => "ok",
            SyncState::Syncing => "syncing",
            SyncState::AuthFailed => "auth_failed",
            SyncState::Error => "error",
        }
    }

    pub fn from_stored(s: &str) -> SyncState {
        match s {
            "ok" => SyncState::Ok,
            "syncing" => SyncState::Syncing,
            "auth_failed" => SyncState::AuthFailed,
            "error" => SyncState::Error,
            _ => SyncState::Pending,
        }
    }

    pub fn to_proto(self) -> pb::SyncState {
        match self {
            SyncState::Pending => pb::SyncState::Pending,
            SyncState::Ok => pb::SyncState::Ok,
            SyncState::Syncing => pb::SyncState::Syncing,
            SyncState::AuthFailed => pb::SyncState::AuthFailed,
            SyncState::Error => pb::SyncState::Error,
        }
    }

    /// From the enum name a filter uses (`OK`, `AUTH_FAILED`, or the full
    /// `SYNC_STATE_AUTH_FAILED`).
    pub fn from_filter(word: &str) -> Option<SyncState> {
        let upper = word.to_ascii_uppercase();
        Some(match upper.strip_prefix("SYNC_STATE_").unwrap_or(&upper) {
            "PENDING" => SyncState::Pending,
            "OK" => SyncState::Ok,
            "SYNCING" => SyncState::Syncing,
            "AUTH_FAILED" => SyncState::AuthFailed,
            "ERROR" => SyncState::Error,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        host: &str,
        port: i32,
        security: pb::Security,
        username: &str,
    ) -> pb::ServerSettings {
        pb::ServerSettings {
            host: host.into(),
            port,
            security: security as i32,
            username: username.into(),
        }
    }

    #[test]
    fn server_settings_default_port_and_username() {
        let s = ServerSettings::parse(
            "imap",
            Protocol::Imap,
            Some(&settings(
                "IMAP.Example.com",
                0,
                pb::Security::Unspecified,
                "",
            )),
            "ann@example.com",
        )
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("imap.example.com", 993, Security::Tls)
        );
        assert_eq!(s.username, "ann@example.com");
        let s = ServerSettings::parse(
            "smtp",
            Protocol::Smtp,
            Some(&settings(
                "smtp.example.com",
                0,
                pb::Security::Starttls,
                "ann",
            )),
            "ann@example.com",
        )
        .unwrap();
        assert_eq!((s.port, s.username.as_str()), (587, "ann"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = ServerSettings::parse(
            "smtp",
            Protocol::Smtp,
            Some(&settings("smtp.example.com", 70000, pb::Security::Tls, "")),
            "a@b.com",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("`smtp.port`"), "{err}");
        let err = ServerSettings::parse(
            "imap",
            Protocol::Imap,
            Some(&settings(
                "imap.example.com",
                993,
                pb::Security::Tls,
                "a\r\nb",
            )),
            "a@b.com",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("`imap.username`"), "{err}");
        assert!(ServerSettings::parse("imap", Protocol::Imap, None, "a@b.com").is_err());
    }

    #[test]
    fn passwords_and_queues_are_bounded() {
        assert!(password("password", "").is_err());
        assert!(password("password", "a\nb").is_err());
        assert!(password("password", &"x".repeat(MAX_PASSWORD + 1)).is_err());
        let id = UserId::new().to_string();
        let crm = Crm::parse(Some(&pb::CrmSettings {
            in_crm: true,
            queue_user_ids: vec![id.clone(), id.clone()],
        }))
        .unwrap();
        assert_eq!(crm.queue.len(), 1, "duplicates in a queue are one");
        assert!(Crm::parse(Some(&pb::CrmSettings {
            in_crm: true,
            queue_user_ids: vec!["nope".into()],
        }))
        .is_err());
    }

    #[test]
    fn sync_states_parse_from_filter_words() {
        assert_eq!(
            SyncState::from_filter("auth_failed"),
            Some(SyncState::AuthFailed)
        );
        assert_eq!(SyncState::from_filter("SYNC_STATE_OK"), Some(SyncState::Ok));
        assert_eq!(SyncState::from_filter("broken"), None);
    }
}
