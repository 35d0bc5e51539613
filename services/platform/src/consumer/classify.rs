//! What a consumer does with a failure: wait it out, give up on the record at once, or try a
//! few more times.
//!
//! [`classify`] walks the whole `anyhow` chain and downcasts each cause:
//! - [`Class::Permanent`]: a [`Refusal`] anywhere in the chain (a handler saying "this will
//!   never work"). Undecodable envelopes and bad ids are refused by the consumer itself.
//! - [`Class::Transient`]: a dependency that is down or busy: a database error that
//!   [`crate::error::db_kind`] calls unavailable (no connection, pool timeout, I/O, SQLSTATE
//!   classes 08 and 53, 57P01–57P03, 57014) or aborted (40001, 40P01), a lock not obtained in
//!   time (55P03); a gRPC status Unavailable, DeadlineExceeded, ResourceExhausted or Aborted; a
//!   Redis I/O, connection or failover error; an I/O error of the connection kind; a timeout.
//!   A failover's read-only primary (25006), a plan invalidated by a rolling migration (0A000),
//!   a system I/O error (class 58) and a broken protocol exchange count too, and so does a
//!   [`Transient`] marker anywhere in the chain (a peer that has not heard of something yet,
//!   identity unreachable for a service token). Retried with back-off for as long as it
//!   takes, never dead-lettered, except a statement cancelled (57014, a `statement_timeout`)
//!   that keeps failing: after [`QUERY_CANCELED_TRANSIENT`] times in a row it counts as
//!   unknown (a poison record must not hold its partition for ever).
//! - [`Class::Unknown`]: anything else; retried with back-off for at least
//!   [`super::MAX_ATTEMPTS`] tries and [`super::Options::unknown_budget`] (15 minutes), then
//!   dead-lettered.

use std::error::Error as StdError;

/// A handler's answer that a record can never be applied (it names what does not exist, or
/// breaks a rule of the receiving side): the consumer keeps it in `dead_letters` at once,
/// without retrying. Return it as `Err(Refusal::new("why").into())`, or wrap the cause with
/// [`Refusal::because`].
#[derive(Debug, thiserror::Error)]
#[error("refused for good: {reason}")]
pub struct Refusal {
    reason: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Refusal {
    /// A refusal saying `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            source: None,
        }
    }

    /// A refusal saying `reason`, caused by `source` (which is not then classified: the
    /// handler has decided).
    pub fn because(
        reason: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// An event of a payload version or type this build does not know.
    pub fn unknown_version(event_type: &str) -> Self {
        Self::new(format!("unknown event type or version `{event_type}`"))
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A marker an error carries as a source to say "retrying later helps" (a peer that has not
/// heard of something yet, a dependency that is unreachable): [`classify`] counts it
/// transient wherever it is in the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("transient: retrying later helps")]
pub struct Transient;

/// Statements cancelled (SQLSTATE 57014) in a row after which a record's failure counts as
/// unknown rather than transient: a `statement_timeout` that fires on every try is the
/// record's own doing, not an outage.
pub const QUERY_CANCELED_TRANSIENT: u32 = 20;

/// Whether `err`'s chain holds a statement cancelled (SQLSTATE 57014), as
/// `statement_timeout` raises.
pub fn is_query_canceled(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014")
        )
    })
}

/// What kind of failure a handler's error is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Will pass once a dependency is back: retried for as long as it takes.
    Transient,
    /// Will never pass: dead-lettered at once.
    Permanent,
    /// Not known: retried for a while ([`super::Options::unknown_budget`]), then
    /// dead-lettered.
    Unknown,
}

/// Classifies `err` by every cause in its chain: a [`Refusal`] anywhere makes it permanent,
/// else any transient cause makes it transient, else it is unknown.
pub fn classify(err: &anyhow::Error) -> Class {
    let mut class = Class::Unknown;
    for cause in err.chain() {
        if cause.downcast_ref::<Refusal>().is_some() {
            return Class::Permanent;
        }
        if is_transient(cause) {
            class = Class::Transient;
        }
    }
    class
}

/// Whether one cause (not its sources) says a dependency is down or busy.
fn is_transient(cause: &(dyn StdError + 'static)) -> bool {
    if cause.downcast_ref::<Transient>().is_some() {
        return true;
    }
    if let Some(err) = cause.downcast_ref::<sqlx::Error>() {
        return sql_transient(err);
    }
    if let Some(status) = cause.downcast_ref::<tonic::Status>() {
        return matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
        );
    }
    if cause.downcast_ref::<tonic::transport::Error>().is_some() {
        // Connecting to a peer failed.
        return true;
    }
    if let Some(err) = cause.downcast_ref::<redis::RedisError>() {
        return err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(
                err.kind(),
                redis::ErrorKind::TryAgain
                    | redis::ErrorKind::ClusterDown
                    | redis::ErrorKind::MasterDown
                    | redis::ErrorKind::BusyLoadingError
                    | redis::ErrorKind::ReadOnly
                    | redis::ErrorKind::ClusterConnectionNotFound
            );
    }
    if let Some(err) = cause.downcast_ref::<crate::redis::RedisError>() {
        return match err {
            crate::redis::RedisError::Connect(_)
            | crate::redis::RedisError::NotConnected
            | crate::redis::RedisError::Timeout(_) => true,
            // Its source, the client's error, is classified as the next cause.
            crate::redis::RedisError::Command(_)
            | crate::redis::RedisError::TooOld { .. }
            | crate::redis::RedisError::Tls(_) => false,
        };
    }
    if let Some(err) = cause.downcast_ref::<std::io::Error>() {
        return io_transient(err);
    }
    cause
        .downcast_ref::<tokio::time::error::Elapsed>()
        .is_some()
}

fn sql_transient(err: &sqlx::Error) -> bool {
    use crate::error::ErrorKind;
    if matches!(
        crate::error::db_kind(err),
        ErrorKind::Unavailable | ErrorKind::Aborted
    ) {
        return true;
    }
    match err {
        // A lock not obtained within `lock_timeout`: another transaction holds it for now.
        // A read-only transaction: a primary that failed over (Patroni, RDS) and is a
        // replica now. A cached plan whose result type changed: a rolling migration. System
        // I/O errors (class 58): the server's disk or OS, not the record.
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("55P03" | "25006" | "0A000") => true,
            Some(code) => code.starts_with("58"),
            None => false,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

fn io_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::Interrupted
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use std::borrow::Cow;

    /// A PostgreSQL error with SQLSTATE `code`, as the driver reports one.
    #[derive(Debug)]
    struct Pg(&'static str);

    impl std::fmt::Display for Pg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error {}", self.0)
        }
    }

    impl StdError for Pg {}

    impl sqlx::error::DatabaseError for Pg {
        fn message(&self) -> &str {
            "database error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn pg(code: &'static str) -> anyhow::Error {
        sqlx::Error::Database(Box::new(Pg(code))).into()
    }

    #[test]
    fn database_outages_and_collisions_are_transient() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "53100", "57P01", "57P02", "57P03",
            "57014", "55P03", "25006", "0A000", "58030", "58P01",
        ] {
            assert_eq!(classify(&pg(code)), Class::Transient, "{code}");
        }
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut.into()),
            Class::Transient
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&sqlx::Error::Io(io).into()), Class::Transient);
        assert_eq!(
            classify(&sqlx::Error::Protocol("unexpected message".into()).into()),
            Class::Transient
        );
        assert!(is_query_canceled(&pg("57014").context("applying")));
        assert!(!is_query_canceled(&pg("57P01")));
    }

    #[test]
    fn a_transient_marker_anywhere_counts() {
        #[derive(Debug, thiserror::Error)]
        #[error("not known yet")]
        struct NotYet(#[source] Transient);
        let err = anyhow::Error::new(NotYet(Transient)).context("applying UserCreated");
        assert_eq!(classify(&err), Class::Transient);
    }

    #[test]
    fn other_database_errors_are_unknown() {
        for code in ["23505", "23503", "22P02", "42P01", "XX000"] {
            assert_eq!(classify(&pg(code)), Class::Unknown, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::RowNotFound.into()), Class::Unknown);
    }

    #[test]
    fn a_cause_deep_in_the_chain_counts() {
        let err = anyhow::Error::from(sqlx::Error::PoolTimedOut)
            .context("loading the user")
            .context("applying UserDismissed");
        assert_eq!(classify(&err), Class::Transient);
        let nested: Result<(), _> = Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let err = nested.context("calling a peer").unwrap_err();
        assert_eq!(classify(&err), Class::Transient);
    }

    #[test]
    fn peer_statuses_by_code() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted,
            tonic::Code::Aborted,
        ] {
            let err = anyhow::Error::from(tonic::Status::new(code, "x")).context("calling access");
            assert_eq!(classify(&err), Class::Transient, "{code:?}");
        }
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::Internal,
        ] {
            let err = anyhow::Error::from(tonic::Status::new(code, "x"));
            assert_eq!(classify(&err), Class::Unknown, "{code:?}");
        }
    }

    #[test]
    fn redis_outages_are_transient() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(classify(&io.into()), Class::Transient);
        let busy = redis::RedisError::from((redis::ErrorKind::BusyLoadingError, "loading"));
        assert_eq!(classify(&busy.into()), Class::Transient);
        let wrong = redis::RedisError::from((redis::ErrorKind::TypeError, "wrong type"));
        assert_eq!(classify(&wrong.into()), Class::Unknown);
        assert_eq!(
            classify(&crate::redis::RedisError::NotConnected.into()),
            Class::Transient
        );
    }

    #[test]
    fn a_refusal_is_permanent_wherever_it_is() {
        assert_eq!(
            classify(&Refusal::new("no such department").into()),
            Class::Permanent
        );
        let err = anyhow::Error::from(Refusal::because(
            "the peer says the mailbox is gone",
            tonic::Status::unavailable("x"),
        ))
        .context("applying MailboxDisconnected");
        assert_eq!(classify(&err), Class::Permanent);
        assert_eq!(
            classify(&Refusal::unknown_version("mailroom.events.v2.X").into()),
            Class::Permanent
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        assert_eq!(classify(&anyhow::anyhow!("a bug")), Class::Unknown);
        let not_found = std::io::Error::new(std::io::ErrorKind::NotFound, "no file");
        assert_eq!(classify(&not_found.into()), Class::Unknown);
    }
}
