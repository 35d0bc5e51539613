//! How a process reaches mail servers: the destination policy it dials with, the TLS trust it
//! verifies with and the deadline one connect-and-login must meet. Built once per service
//! (from its configuration) and passed to [`crate::imap::connect`] and
//! [`crate::smtp::check_login`], so every connection follows the same rules.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::dial::{Destination, DialError, Policy};
use crate::login::Login;
use crate::tls;

/// The connector's deadline passed (each protocol's error says it in its words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Duration);

/// The policy, TLS configuration and deadline every connection of a process uses.
#[derive(Clone)]
pub struct Connector {
    policy: Policy,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl Connector {
    /// `timeout` bounds one connection from the first DNS query to the login's answer.
    pub fn new(policy: Policy, timeout: Duration) -> Self {
        Self {
            policy,
            tls: tls::client_config(),
            timeout,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves `login`'s host once and admits it by the policy.
    pub async fn resolve(&self, login: &Login) -> Result<Destination, DialError> {
        self.policy.resolve(&login.host, login.port).await
    }

    /// `work`'s outcome, or [`Deadline`] when it takes longer than the deadline.
    pub(crate) async fn within<T, E: From<Deadline>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(Deadline(self.timeout).into()))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
