//! What the sync can fail at: [`SyncFailure`] is a mailbox's sync failing against its mail
//! server (reported as MailboxSyncFailed, never a gRPC error); [`SyncError`] is what the API
//! refuses or fails at, mapped to gRPC codes here and only here (through the platform's
//! `to_status`).

use mailroom_mail::imap::{ImapError, LimitExceeded};
use mailroom_mail::tls::TlsError;
use mailroom_mail::Login;
use mailroom_platform::error::{ApiError, ErrorKind};
use mailroom_platform::proto::events::v1 as ev;

/// Why a mailbox's sync failed, in the terms the registry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server refused the login: park the mailbox until its settings change.
    AuthFailed,
    Unreachable,
    Tls,
    Timeout,
    /// The server said something the sync could not use.
    Protocol,
    /// The server refused one command (a folder it will not open for this account): that
    /// folder is skipped, the rest of the mailbox synced.
    Refused,
    /// The server's answers, or the mailbox, went over a configured limit (the message names
    /// the setting): retried with back-off, as the limit may be raised.
    Limit,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::AuthFailed => "auth_failed",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::Refused => "refused",
            FailureKind::Limit => "limit",
        }
    }

    /// The mail layer's sorting, in the registry's terms: a destination the policy refuses
    /// is unreachable.
    pub fn of(kind: mailroom_mail::FailureKind) -> Self {
        use mailroom_mail::FailureKind as Mail;
        match kind {
            Mail::AuthFailed => FailureKind::AuthFailed,
            Mail::Unreachable | Mail::Forbidden => FailureKind::Unreachable,
            Mail::Tls => FailureKind::Tls,
            Mail::Timeout => FailureKind::Timeout,
            Mail::Protocol => FailureKind::Protocol,
        }
    }

    pub fn to_proto(self) -> ev::SyncFailureKind {
        match self {
            FailureKind::AuthFailed => ev::SyncFailureKind::AuthFailed,
            FailureKind::Unreachable => ev::SyncFailureKind::Unreachable,
            FailureKind::Tls => ev::SyncFailureKind::Tls,
            FailureKind::Timeout => ev::SyncFailureKind::Timeout,
            FailureKind::Limit => ev::SyncFailureKind::Limit,
            FailureKind::Protocol | FailureKind::Refused => ev::SyncFailureKind::Protocol,
        }
    }
}

/// A sync that failed against the mail server, with a sentence for a person (never a
/// credential).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyncFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Most characters of a failure's message (what the schedule stores and events carry).
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `text` on one line (control characters become spaces) and at most
/// [`MAX_MESSAGE_CHARS`] characters, an ellipsis marking a cut.
pub fn bounded_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS * 4));
    for (n, c) in text.trim().chars().enumerate() {
        if n == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The setting that holds a read limit, for a person who may raise it.
fn setting_of(limit: &LimitExceeded) -> &'static str {
    match limit {
        LimitExceeded::Line { .. } | LimitExceeded::Kept { .. } => "MAILROOM_SYNC__MAX_LINE_BYTES",
        LimitExceeded::Literal { .. } => "MAILROOM_SYNC__MAX_LITERAL_BYTES",
        LimitExceeded::Responses { .. } => "MAILROOM_SYNC__MAX_RESPONSES_PER_COMMAND",
        LimitExceeded::Deadline { .. } => "MAILROOM_SYNC__COMMAND_DEADLINE_SECS",
        LimitExceeded::StatusText => "none: the server does not speak IMAP here",
    }
}

impl SyncFailure {
    /// A failure whose message is bounded ([`bounded_message`]) whatever went into it.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: bounded_message(&message.into()),
        }
    }

    /// The server's answer went over a read limit: what was read stays, nothing more is.
    pub fn over_limit(limit: LimitExceeded) -> Self {
        let kind = match limit {
            LimitExceeded::Deadline { .. } => FailureKind::Timeout,
            LimitExceeded::StatusText => FailureKind::Protocol,
            _ => FailureKind::Limit,
        };
        Self::new(
            kind,
            format!(
                "{limit} (limit {}); the connection was dropped there, and what was indexed before stays",
                setting_of(&limit)
            ),
        )
    }

    pub fn protocol(err: impl std::fmt::Display) -> Self {
        Self::new(FailureKind::Protocol, err.to_string())
    }

    /// A connect or login to `login`'s server that failed, in a sentence naming the server.
    pub fn connecting(login: &Login, err: &ImapError) -> Self {
        let (host, port) = (&login.host, login.port);
        let message = match err {
            ImapError::Timeout(after) => format!(
                "{host}:{port} did not complete the login within {} s",
                after.as_secs()
            ),
            ImapError::Dial(e) => format!("cannot reach {host}:{port}: {e}"),
            ImapError::Tls(TlsError::Name) => {
                format!("`{host}` is not a name a certificate can be checked against")
            }
            ImapError::Tls(e) => format!("TLS with {host} failed: {e}"),
            ImapError::StartTls(e) => format!("{host} refused STARTTLS: {e}"),
            ImapError::Closed => format!("{host} closed the connection before greeting"),
            ImapError::Greeting(e) => format!("no IMAP greeting from {host}: {e}"),
            ImapError::LoginRefused(said) => format!(
                "{host} refused the login for `{}` ({said}); update the mailbox's password or server in the registry",
                login.username
            ),
            ImapError::LoginBad(_) | ImapError::Login(_) => {
                format!("login to {host} failed: {err}")
            }
            ImapError::Limit(limit) => {
                let failure = Self::over_limit(*limit);
                return Self::new(failure.kind, format!("{host}: {}", failure.message));
            }
        };
        Self::new(FailureKind::of(err.kind()), message)
    }
}

impl From<async_imap::error::Error> for SyncFailure {
    fn from(err: async_imap::error::Error) -> Self {
        use async_imap::error::Error;
        if let Some(limit) = mailroom_mail::imap::limit_of(&err) {
            return SyncFailure::over_limit(limit);
        }
        match &err {
            Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                SyncFailure::new(FailureKind::Timeout, err.to_string())
            }
            Error::Io(io) => match unparsable(io) {
                Some(began) => SyncFailure::new(
                    FailureKind::Protocol,
                    format!("the server sent something that is not IMAP (it began: {began})"),
                ),
                None => SyncFailure::new(FailureKind::Unreachable, err.to_string()),
            },
            Error::ConnectionLost => SyncFailure::new(FailureKind::Unreachable, err.to_string()),
            Error::No(_) => SyncFailure::new(
                FailureKind::Refused,
                format!("the server refused: {}", mailroom_mail::imap::said(&err)),
            ),
            Error::Bad(_) => SyncFailure::new(
                FailureKind::Protocol,
                format!(
                    "the server did not take a command: {}",
                    mailroom_mail::imap::said(&err)
                ),
            ),
            _ => SyncFailure::protocol(err),
        }
    }
}

/// The start of what async-imap could not parse, when `err` is such a failure (its text is
/// the parser's state and then the whole response, which may be megabytes).
fn unparsable(err: &std::io::Error) -> Option<String> {
    const MARK: &str = " during parsing of ";
    let text = err.get_ref()?.to_string();
    let at = text.find(MARK)?;
    let began: String = text[at + MARK.len()..].chars().take(60).collect();
    Some(mailroom_mail::one_line(&began))
}

/// How one sync run ended when it did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Failed(#[from] SyncFailure),
    /// The index could not be written: nothing is reported, the work is retried.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Told to stop (shutdown, or the lease was lost): what was committed stays.
    #[error("stopped before the end")]
    Stopped,
    /// A newer holder of the mailbox's lease claimed it: this run's write was refused, and
    /// nothing more of it is written.
    #[error(transparent)]
    Fenced(#[from] crate::store::fences::Stale),
}

impl From<crate::store::fences::WriteError> for RunError {
    fn from(err: crate::store::fences::WriteError) -> Self {
        match err {
            crate::store::fences::WriteError::Stale(stale) => RunError::Fenced(stale),
            crate::store::fences::WriteError::Db(db) => RunError::Db(db),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, another organisation's, or not visible to the caller: one answer for all.
    #[error("mailbox `{0}` was not found")]
    NotFound(String),
    #[error("{0}")]
    MessageNotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over a bound on expensive work (GetMessageBody per person or per mail server); the
    /// message says when to try again.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", mailroom_platform::error::db_message(.0))]
    Db(#[source] sqlx::Error),
    #[error("Redis is unavailable: {0}")]
    Redis(String),
}

mailroom_platform::service_error!(SyncError);

impl From<redis::RedisError> for SyncError {
    fn from(err: redis::RedisError) -> Self {
        SyncError::Redis(err.to_string())
    }
}

/// The sync asks its peers (the registry, access control) only about its own work, never
/// with its caller's input: whatever they answer other than yes is them failing the sync.
impl From<mailroom_clients::PeerError> for SyncError {
    fn from(err: mailroom_clients::PeerError) -> Self {
        SyncError::Unavailable(err.to_string())
    }
}

impl ApiError for SyncError {
    fn kind(&self) -> ErrorKind {
        use SyncError::*;
        match self {
            InvalidArgument(_) => ErrorKind::InvalidArgument,
            NotFound(_) | MessageNotFound(_) => ErrorKind::NotFound,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Unavailable(_) | DbUnavailable(_) | Redis(_) => ErrorKind::Unavailable,
            Db(err) => mailroom_platform::error::db_kind(err),
        }
    }
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_goes_out_as_its_own_kind_where_the_proto_has_one() {
        assert_eq!(FailureKind::Limit.to_proto(), ev::SyncFailureKind::Limit);
        assert_eq!(
            FailureKind::AuthFailed.to_proto(),
            ev::SyncFailureKind::AuthFailed
        );
        assert_eq!(
            FailureKind::Refused.to_proto(),
            ev::SyncFailureKind::Protocol
        );
    }

    #[test]
    fn a_refusal_is_told_in_the_servers_words() {
        let refused = SyncFailure::from(async_imap::error::Error::No(
            r#"code: None, info: Some("[NONEXISTENT] Mailbox doesn't exist: Old")"#.into(),
        ));
        assert_eq!(refused.kind, FailureKind::Refused);
        assert_eq!(
            refused.message,
            "the server refused: [NONEXISTENT] Mailbox doesn't exist: Old"
        );
    }
}
