//! Logging in to a mailbox's IMAP and SMTP servers for real, to tell a person at once whether
//! the settings they typed work, and if not, which step failed and why.
//!
//! Each check is the mail layer's (`mailroom_mail`): dial through the destination policy,
//! TLS or STARTTLS as configured (certificates verified against the web PKI roots), log in,
//! log out, within one deadline. Here its failures become sentences a person can act on: the
//! password was refused, the host could not be reached, TLS failed, the server did not answer
//! in time, it did not speak the protocol expected on that port, or the destination is one
//! the registry may not connect to (by default never loopback, link-local — cloud metadata —
//! or unspecified addresses, so the connect API cannot probe the cluster from inside). The
//! password goes to the server and nowhere else: it is never part of an error, a log line or
//! a span. What a server said is quoted as it said it, never as a library's debug text
//! ([`server_words`]).

mod server_words;

use std::time::Duration;

use mailroom_mail::dial::Policy;
use mailroom_mail::imap::{self, ImapError};
use mailroom_mail::smtp::{self, SmtpError};
use mailroom_mail::{Connector, FailureKind, Login};
use secrecy::SecretString;

use crate::domain::ServerSettings;

/// How long a check waits for a server's goodbye after the login was decided.
const GOODBYE: Duration = Duration::from_millis(500);

/// Which server a check talked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Imap,
    Smtp,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Imap => "IMAP",
            Step::Smtp => "SMTP",
        }
    }
}

/// Why a login check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    WrongPassword(String),
    Unreachable(String),
    Tls(String),
    Timeout(Duration),
    Protocol(String),
    /// The destination is one the registry may not connect to.
    Refused(String),
}

impl Failure {
    /// The mail layer's failure of kind `kind`, `detail` in its words; `deadline` the check's.
    fn of(kind: FailureKind, detail: String, deadline: Duration) -> Self {
        match kind {
            FailureKind::AuthFailed => Failure::WrongPassword(detail),
            FailureKind::Unreachable => Failure::Unreachable(detail),
            FailureKind::Forbidden => Failure::Refused(detail),
            FailureKind::Tls => Failure::Tls(detail),
            FailureKind::Timeout => Failure::Timeout(deadline),
            FailureKind::Protocol => Failure::Protocol(detail),
        }
    }
}

/// A failed check: the step and the cause, displayed as a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.sentence())]
pub struct ProbeError {
    pub step: Step,
    pub host: String,
    pub port: u16,
    pub failure: Failure,
}

impl ProbeError {
    fn sentence(&self) -> String {
        let (step, at) = (self.step.name(), format!("{}:{}", self.host, self.port));
        match &self.failure {
            Failure::WrongPassword(detail) => format!(
                "{step} login failed: {at} refused the username or password ({detail}); check the password, and the username if the server wants another than the address"
            ),
            Failure::Unreachable(detail) => format!(
                "{step} server unreachable: could not connect to {at} ({detail}); check the host name and port"
            ),
            Failure::Tls(detail) => format!(
                "{step} TLS failed with {at} ({detail}); check the security setting (TLS, STARTTLS or none) for this port and that the server's certificate is valid for the host name"
            ),
            Failure::Timeout(after) => format!(
                "{step} server did not answer: {at} gave no reply within {} s; check the host and port, or whether a firewall drops the connection",
                after.as_secs_f32()
            ),
            Failure::Protocol(detail) => format!(
                "{step} server at {at} did not answer as {step} should ({detail}); check the port and the security setting"
            ),
            Failure::Refused(detail) => format!(
                "{step} server {at} is not allowed: {detail}"
            ),
        }
    }
}

/// Runs login checks with one deadline per check.
#[derive(Clone)]
pub struct Prober {
    connector: Connector,
}

impl Prober {
    /// `policy`: where the registry may connect; `timeout`: one check's deadline.
    pub fn new(timeout: Duration, policy: Policy) -> Self {
        Self {
            connector: Connector::new(policy, timeout),
        }
    }

    /// Checks both logins concurrently; every failure, IMAP's first.
    pub async fn check_both(
        &self,
        imap: &ServerSettings,
        smtp: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), Vec<ProbeError>> {
        let (i, s) = tokio::join!(self.imap(imap, password), self.smtp(smtp, password));
        let failures: Vec<ProbeError> = [i.err(), s.err()].into_iter().flatten().collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    fn error(&self, step: Step, server: &ServerSettings, failure: Failure) -> ProbeError {
        ProbeError {
            step,
            host: server.host.clone(),
            port: server.port,
            failure,
        }
    }

    /// Logs in to IMAP and out again.
    #[tracing::instrument(skip_all, fields(host = %server.host, port = server.port))]
    pub async fn imap(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        match imap::connect(&self.connector, &login(server, password)).await {
            Ok(mut session) => {
                // The login is what was checked; a server slow to say goodbye does not fail
                // it (the connection is dropped either way).
                let _ = tokio::time::timeout(GOODBYE, session.logout()).await;
                Ok(())
            }
            Err(e) => Err(self.error(Step::Imap, server, self.imap_failure(e))),
        }
    }

    fn imap_failure(&self, e: ImapError) -> Failure {
        Failure::of(e.kind(), server_words::imap(&e), self.connector.timeout())
    }

    /// Logs in to SMTP (AUTH) and quits.
    #[tracing::instrument(skip_all, fields(host = %server.host, port = server.port))]
    pub async fn smtp(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        smtp::check_login(&self.connector, &login(server, password))
            .await
            .map_err(|e| self.error(Step::Smtp, server, self.smtp_failure(e)))
    }

    fn smtp_failure(&self, e: SmtpError) -> Failure {
        Failure::of(e.kind(), e.to_string(), self.connector.timeout())
    }
}

fn login(server: &ServerSettings, password: &SecretString) -> Login {
    Login {
        host: server.host.clone(),
        port: server.port,
        security: server.security,
        username: server.username.clone(),
        password: password.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_reads_differently_and_names_the_step() {
        let err = |failure| ProbeError {
            step: Step::Smtp,
            host: "mail.example.com".into(),
            port: 587,
            failure,
        };
        let sentences: Vec<String> = [
            Failure::WrongPassword("535".into()),
            Failure::Unreachable("connection refused".into()),
            Failure::Tls("bad certificate".into()),
            Failure::Timeout(Duration::from_secs(10)),
            Failure::Protocol("no greeting".into()),
        ]
        .into_iter()
        .map(|f| err(f).to_string())
        .collect();
        for s in &sentences {
            assert!(s.starts_with("SMTP "), "{s}");
            assert!(s.contains("mail.example.com:587"), "{s}");
        }
        assert!(sentences[0].contains("password"));
        assert!(sentences[1].contains("unreachable"));
        assert!(sentences[2].contains("TLS"));
        assert!(sentences[3].contains("did not answer"));
        let unique: std::collections::HashSet<_> = sentences.iter().collect();
        assert_eq!(unique.len(), sentences.len());
    }

    #[tokio::test]
    async fn a_local_server_is_refused_for_both_steps_unless_allowed() {
        let server = ServerSettings {
            host: "localhost".into(),
            port: 9,
            security: mailroom_mail::Security::None,
            username: "ann@example.com".into(),
        };
        let prober = Prober::new(Duration::from_secs(2), Policy::default());
        let failures = prober
            .check_both(&server, &server, &SecretString::from("pw"))
            .await
            .unwrap_err();
        let steps: Vec<Step> = failures.iter().map(|f| f.step).collect();
        assert_eq!(steps, [Step::Imap, Step::Smtp]);
        for failure in &failures {
            assert!(
                matches!(failure.failure, Failure::Refused(_)),
                "{failure:?}"
            );
            assert!(failure.to_string().contains("is not allowed"), "{failure}");
        }
    }
}
