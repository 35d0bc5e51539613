//! Logging in to a mailbox's IMAP and SMTP servers for real, to tell a person at once whether
//! the settings they typed work, and if not, which step failed and why.
//!
//! Each check connects (TCP, then TLS or STARTTLS as configured, verifying the certificate
//! against the web PKI roots), logs in, and logs out, within one deadline. Failures are sorted
//! into what a person can act on: the password was refused, the host could not be reached,
//! TLS failed, the server did not answer in time, or it did not speak the protocol expected
//! on that port. The password goes to the server and nowhere else: it is never part of an
//! error, a log line or a span.
//!
//! Where the registry may connect is bounded too ([`Destinations`], applied by the platform's
//! `net::dial`): by default never to loopback, link-local (cloud metadata) or unspecified
//! addresses, so the connect API cannot be used to probe the cluster from inside.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::domain::{Security, ServerSettings};

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

/// Which addresses the registry may connect to.
#[derive(Debug, Clone, Copy)]
pub struct Destinations {
    /// Loopback and other local addresses (tests and local development only).
    pub allow_local: bool,
}

/// Runs login checks with one deadline per check.
#[derive(Clone)]
pub struct Prober {
    pub timeout: Duration,
    pub destinations: Destinations,
    tls: Arc<rustls::ClientConfig>,
}

impl Prober {
    pub fn new(timeout: Duration, destinations: Destinations) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // The ring provider supports the default versions; this cannot fail in practice,
            // and an empty config would only make TLS checks fail, never pass wrongly.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        Self {
            timeout,
            destinations,
            tls: Arc::new(tls),
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

    /// Resolves the host, refuses forbidden destinations, and opens TCP to the first address
    /// that answers.
    async fn open(&self, step: Step, server: &ServerSettings) -> Result<TcpStream, ProbeError> {
        use mailroom_platform::net::{dial, DialError};
        dial(&server.host, server.port, self.destinations.allow_local)
            .await
            .map_err(|e| {
                let failure = match e {
                    DialError::Local(_) => Failure::Refused(e.to_string()),
                    DialError::Connect(detail) => Failure::Unreachable(detail),
                    DialError::Resolve(_) | DialError::NoAddresses => {
                        Failure::Unreachable(e.to_string())
                    }
                };
                self.error(step, server, failure)
            })
    }

    async fn tls_wrap(
        &self,
        step: Step,
        server: &ServerSettings,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
        let name = rustls::pki_types::ServerName::try_from(server.host.clone()).map_err(|_| {
            self.error(
                step,
                server,
                Failure::Tls("the host is not a name a certificate can be checked against".into()),
            )
        })?;
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.error(step, server, Failure::Tls(e.to_string())))
    }

    /// Logs in to IMAP and out again.
    #[tracing::instrument(skip_all, fields(host = %server.host, port = server.port))]
    pub async fn imap(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        let step = Step::Imap;
        let deadline = self.timeout;
        match tokio::time::timeout(deadline, self.imap_inner(server, password)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(step, server, Failure::Timeout(deadline))),
        }
    }

    async fn imap_inner(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        let step = Step::Imap;
        let tcp = self.open(step, server).await?;
        match server.security {
            Security::Tls => {
                let tls = self.tls_wrap(step, server, tcp).await?;
                self.imap_login(server, async_imap::Client::new(tls), password)
                    .await
            }
            Security::None => {
                self.imap_login(server, async_imap::Client::new(tcp), password)
                    .await
            }
            Security::StartTls => {
                let mut client = async_imap::Client::new(tcp);
                self.imap_greeting(server, &mut client).await?;
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| {
                        self.error(
                            step,
                            server,
                            Failure::Tls(format!("the server refused STARTTLS: {e}")),
                        )
                    })?;
                let tls = self.tls_wrap(step, server, client.into_inner()).await?;
                let client = async_imap::Client::new(tls);
                self.imap_authenticate(server, client, password).await
            }
        }
    }

    async fn imap_greeting<S>(
        &self,
        server: &ServerSettings,
        client: &mut async_imap::Client<S>,
    ) -> Result<(), ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
    {
        match client.read_response().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.error(
                Step::Imap,
                server,
                Failure::Protocol("the connection closed before a greeting".into()),
            )),
            Err(e) if is_tls_like(&e) => {
                Err(self.error(Step::Imap, server, Failure::Tls(e.to_string())))
            }
            Err(e) => Err(self.error(
                Step::Imap,
                server,
                Failure::Protocol(format!("no IMAP greeting: {e}")),
            )),
        }
    }

    async fn imap_login<S>(
        &self,
        server: &ServerSettings,
        mut client: async_imap::Client<S>,
        password: &SecretString,
    ) -> Result<(), ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
    {
        self.imap_greeting(server, &mut client).await?;
        self.imap_authenticate(server, client, password).await
    }

    async fn imap_authenticate<S>(
        &self,
        server: &ServerSettings,
        client: async_imap::Client<S>,
        password: &SecretString,
    ) -> Result<(), ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
    {
        let step = Step::Imap;
        match client
            .login(&server.username, password.expose_secret())
            .await
        {
            Ok(mut session) => {
                // The login is what was checked; a server slow to say goodbye does not fail
                // it (the connection is dropped either way).
                let _ = tokio::time::timeout(GOODBYE, session.logout()).await;
                Ok(())
            }
            Err((async_imap::error::Error::No(text), _)) => Err(self.error(
                step,
                server,
                Failure::WrongPassword(format!("the server said: {}", one_line(&text))),
            )),
            Err((async_imap::error::Error::Bad(text), _)) => Err(self.error(
                step,
                server,
                Failure::Protocol(format!(
                    "LOGIN was refused as a bad command ({}); the server may want TLS first",
                    one_line(&text)
                )),
            )),
            Err((e, _)) => Err(self.error(step, server, Failure::Protocol(e.to_string()))),
        }
    }

    /// Logs in to SMTP (AUTH) and quits.
    #[tracing::instrument(skip_all, fields(host = %server.host, port = server.port))]
    pub async fn smtp(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        let step = Step::Smtp;
        let deadline = self.timeout;
        match tokio::time::timeout(deadline, self.smtp_inner(server, password)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(step, server, Failure::Timeout(deadline))),
        }
    }

    async fn smtp_inner(
        &self,
        server: &ServerSettings,
        password: &SecretString,
    ) -> Result<(), ProbeError> {
        let step = Step::Smtp;
        // Reachability and the destination policy first, with our own connect, so
        // "unreachable" is told apart from what lettre reports after connecting.
        drop(self.open(step, server).await?);
        let (wrapper, starttls) = match server.security {
            Security::None => (None, None),
            Security::StartTls | Security::Tls => {
                let params = TlsParameters::new(server.host.clone())
                    .map_err(|e| self.error(step, server, Failure::Tls(e.to_string())))?;
                if server.security == Security::Tls {
                    (Some(params), None)
                } else {
                    (None, Some(params))
                }
            }
        };
        let hello = ClientId::default();
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (server.host.as_str(), server.port),
            Some(self.timeout),
            &hello,
            wrapper,
            None,
        )
        .await
        .map_err(|e| self.error(step, server, classify_smtp(&e, self.timeout)))?;
        let outcome = async {
            if let Some(params) = starttls {
                if !conn.can_starttls() {
                    return Err(Failure::Tls(
                        "the server does not offer STARTTLS on this port".into(),
                    ));
                }
                conn.starttls(params, &hello)
                    .await
                    .map_err(|e| classify_smtp(&e, self.timeout))?;
            }
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(server.username.clone(), password.expose_secret().to_owned()),
            )
            .await
            .map(|_| ())
            .map_err(|e| classify_smtp(&e, self.timeout))
        }
        .await;
        // Whatever happened, say goodbye briefly and close: a refused login must not leave a
        // connection open on the server.
        let _ = tokio::time::timeout(GOODBYE, conn.abort()).await;
        outcome.map_err(|failure| self.error(step, server, failure))
    }
}

fn classify_smtp(e: &lettre::transport::smtp::Error, timeout: Duration) -> Failure {
    let detail = one_line(&e.to_string());
    if e.is_timeout() {
        return Failure::Timeout(timeout);
    }
    if e.is_tls() {
        return Failure::Tls(detail);
    }
    if let Some(code) = e.status() {
        let code = code.to_string();
        if matches!(code.as_str(), "535" | "534" | "530" | "454") || code.starts_with("535") {
            return Failure::WrongPassword(format!("the server answered {detail}"));
        }
        return Failure::Protocol(format!("the server answered {detail}"));
    }
    if detail.contains("authentication mechanism") {
        return Failure::Protocol(
            "the server offers no AUTH PLAIN or LOGIN on this connection (does it want TLS first?)"
                .into(),
        );
    }
    if detail.to_ascii_lowercase().contains("tls") || detail.contains("certificate") {
        return Failure::Tls(detail);
    }
    Failure::Protocol(detail)
}

fn is_tls_like(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.kind() == std::io::ErrorKind::InvalidData
        || text.contains("tls")
        || text.contains("certificate")
}

/// A server's words, on one line and not too long, for an error message.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat.to_owned(),
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

    #[test]
    fn server_text_is_flattened_and_bounded() {
        assert_eq!(
            one_line("NO\r\n[AUTHENTICATIONFAILED]"),
            "NO  [AUTHENTICATIONFAILED]"
        );
        assert!(one_line(&"x".repeat(500)).chars().count() <= 201);
    }
}
