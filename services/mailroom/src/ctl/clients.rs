//! What every `ctl` command calls through: the five services' endpoints, the credentials a
//! person gives, signing in with them once, and the generated clients on `mailroom_clients`'
//! channels that carry the resulting token.
//!
//! Credentials, first found wins: a token as given; an email and password, signed in on the
//! fly; a service client's id and secret (the operator's), exchanged for one service token per
//! service, each addressed to the service it is sent to (so no service can replay the
//! operator's token to another). With none, only public methods answer. A refusal prints as
//! `Code: message`, the same for every command.

use anyhow::Context;
use clap::Args;
use mailroom_clients::{
    Bearer, Caller, IdentityClient, Peer, PeerChannel, ServiceCredential, Settings,
};
use mailroom_platform::config::local;

use super::context::{ContextEndpoints, Selected};
use super::exit::{Refused, Unreachable};
use super::outbound::SentSecret;
use mailroom_platform::proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::proto::invitations::v1::invitation_service_client::InvitationServiceClient;
use mailroom_platform::proto::mailboxes::v1::mailbox_service_client::MailboxServiceClient;
use mailroom_platform::proto::ops::v1::event_ops_service_client::EventOpsServiceClient;
use mailroom_platform::proto::sync::v1::sync_service_client::SyncServiceClient;
use pb::auth_service_client::AuthServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;

/// Where the five services answer, as flags or environment variables give them; each one not
/// given is the context's, else the local service's.
#[derive(Args)]
pub struct EndpointArgs {
    /// Identity's gRPC endpoint [default: the context's, else the local one].
    #[arg(long, env = "MAILROOM_IDENTITY_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// Access control's gRPC endpoint [default: the context's, else the local one].
    #[arg(long, env = "MAILROOM_ACCESS_ENDPOINT", global = true)]
    access_endpoint: Option<String>,
    /// The mailbox registry's gRPC endpoint [default: the context's, else the local one].
    #[arg(long, env = "MAILROOM_MAILBOXES_ENDPOINT", global = true)]
    mailboxes_endpoint: Option<String>,
    /// The sync service's gRPC endpoint [default: the context's, else the local one].
    #[arg(long, env = "MAILROOM_SYNC_ENDPOINT", global = true)]
    sync_endpoint: Option<String>,
    /// The invitations service's gRPC endpoint [default: the context's, else the local one].
    #[arg(long, env = "MAILROOM_INVITATIONS_ENDPOINT", global = true)]
    invitations_endpoint: Option<String>,
}

impl EndpointArgs {
    /// The endpoints: each flag or variable, else the context's, else the local service's.
    pub(crate) fn resolve(&self, context: Option<&ContextEndpoints>) -> Endpoints {
        let local = Endpoints::local();
        let pick = |given: &Option<String>,
                    from_context: fn(&ContextEndpoints) -> &Option<String>,
                    default: String| {
            given
                .clone()
                .or_else(|| context.and_then(|c| from_context(c).clone()))
                .unwrap_or(default)
        };
        Endpoints {
            endpoint: pick(&self.endpoint, |c| &c.identity, local.endpoint),
            access_endpoint: pick(&self.access_endpoint, |c| &c.access, local.access_endpoint),
            mailboxes_endpoint: pick(
                &self.mailboxes_endpoint,
                |c| &c.mailboxes,
                local.mailboxes_endpoint,
            ),
            sync_endpoint: pick(&self.sync_endpoint, |c| &c.sync, local.sync_endpoint),
            invitations_endpoint: pick(
                &self.invitations_endpoint,
                |c| &c.invitations,
                local.invitations_endpoint,
            ),
        }
    }

    /// The endpoints given rather than defaulted, each after where it was given: the flag and
    /// variable, else the context's key. The local defaults are not listed.
    pub(crate) fn given(&self, context: Option<&Selected<'_>>) -> Vec<(String, String)> {
        let one = |given: &Option<String>,
                   flag: &str,
                   key: &str,
                   from_context: fn(&ContextEndpoints) -> &Option<String>| {
            match given {
                Some(endpoint) => Some((flag.to_owned(), endpoint.clone())),
                None => context.and_then(|s| {
                    let endpoint = from_context(&s.context.endpoints).clone()?;
                    Some((s.key(&format!("endpoints.{key}")), endpoint))
                }),
            }
        };
        [
            one(
                &self.endpoint,
                "--endpoint/MAILROOM_IDENTITY_ENDPOINT",
                "identity",
                |c| &c.identity,
            ),
            one(
                &self.access_endpoint,
                "--access-endpoint/MAILROOM_ACCESS_ENDPOINT",
                "access",
                |c| &c.access,
            ),
            one(
                &self.mailboxes_endpoint,
                "--mailboxes-endpoint/MAILROOM_MAILBOXES_ENDPOINT",
                "mailboxes",
                |c| &c.mailboxes,
            ),
            one(
                &self.sync_endpoint,
                "--sync-endpoint/MAILROOM_SYNC_ENDPOINT",
                "sync",
                |c| &c.sync,
            ),
            one(
                &self.invitations_endpoint,
                "--invitations-endpoint/MAILROOM_INVITATIONS_ENDPOINT",
                "invitations",
                |c| &c.invitations,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Where the five services answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    endpoint: String,
    access_endpoint: String,
    mailboxes_endpoint: String,
    sync_endpoint: String,
    invitations_endpoint: String,
}

impl Endpoints {
    /// Identity's endpoint, where signing in sends a password or client secret.
    pub(crate) fn identity(&self) -> &str {
        &self.endpoint
    }

    /// The services of `mailroom dev` on this machine.
    pub(crate) fn local() -> Self {
        Self {
            endpoint: local::identity(),
            access_endpoint: local::access(),
            mailboxes_endpoint: local::mailboxes(),
            sync_endpoint: local::sync(),
            invitations_endpoint: local::invitations(),
        }
    }
}

/// Who the commands run as (see the module's header for the order).
#[derive(Args)]
pub struct Credentials {
    #[arg(long, env = "MAILROOM_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "MAILROOM_EMAIL", global = true)]
    email: Option<String>,
    #[arg(long, env = "MAILROOM_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    #[arg(long, env = "MAILROOM_CLIENT_ID", global = true)]
    client_id: Option<String>,
    #[arg(
        long,
        env = "MAILROOM_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    client_secret: Option<String>,
}

impl Credentials {
    /// Whether a service client's secret is still to come from elsewhere (a context): no
    /// token, no person's email and password, and no secret given.
    pub(crate) fn wants_client_secret(&self) -> bool {
        self.token.is_none()
            && !(self.email.is_some() && self.password.is_some())
            && self.client_secret.is_none()
    }

    /// The secret signing in sends to identity (see [`Credentials::sign_in`] and
    /// [`Credentials::service_tokens`]): none with a token, else a person's password, else a
    /// service client's secret.
    pub(crate) fn sent_secret(&self) -> Option<SentSecret> {
        if self.token.is_some() {
            None
        } else if self.email.is_some() && self.password.is_some() {
            Some(SentSecret::Password)
        } else if self.client_id.is_some() && self.client_secret.is_some() {
            Some(SentSecret::ClientSecret)
        } else {
            None
        }
    }

    /// Fills the service client's id and secret where the flags and variables gave none.
    pub(crate) fn fill_client(&mut self, id: String, secret: &SecretString) {
        if self.client_id.is_none() {
            self.client_id = Some(id);
        }
        if self.client_secret.is_none() {
            self.client_secret = Some(secret.expose_secret().to_owned());
        }
    }

    /// A person signing in with their login address and password.
    pub(crate) fn password(email: &str, password: &str) -> Self {
        Self {
            token: None,
            email: Some(email.to_owned()),
            password: Some(password.to_owned()),
            client_id: None,
            client_secret: None,
        }
    }

    /// The access token these credentials stand for: as given, or from signing in. A service
    /// client's credential stands for no one token: see [`Credentials::service_tokens`].
    async fn sign_in(
        &self,
        auth: &mut AuthServiceClient<PeerChannel>,
    ) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        if let (Some(email), Some(password)) = (&self.email, &self.password) {
            let pair = auth
                .login(pb::LoginRequest {
                    login_email: email.clone(),
                    password: password.clone(),
                    org_id: String::new(),
                })
                .await
                .answer()?;
            return Ok(Some(pair.access_token));
        }
        Ok(None)
    }

    /// With a service client's id and secret (and no person's credentials), a token for each
    /// service, addressed to it.
    async fn service_tokens(
        &self,
        identity: &PeerChannel,
        settings: &Settings,
    ) -> anyhow::Result<Option<ServiceTokens>> {
        if self.token.is_some() || (self.email.is_some() && self.password.is_some()) {
            return Ok(None);
        }
        let (Some(id), Some(secret)) = (&self.client_id, &self.client_secret) else {
            return Ok(None);
        };
        let credential = ServiceCredential::new(
            identity.clone(),
            id.clone(),
            SecretString::from(secret.clone()),
            settings.token_timeout,
        );
        let token = |peer: Peer| {
            let credential = credential.clone();
            async move {
                credential
                    .bearer(peer)
                    .await
                    .map(|bearer| ServiceToken(Some(bearer)))
            }
        };
        let (identity, access, mailboxes, sync, invitations) = tokio::try_join!(
            token(Peer::Identity),
            token(Peer::Access),
            token(Peer::Mailboxes),
            token(Peer::Sync),
            token(Peer::Invitations),
        )?;
        Ok(Some(ServiceTokens {
            identity,
            access,
            mailboxes,
            sync,
            invitations,
        }))
    }
}

/// A service client's token for each service.
#[derive(Default)]
struct ServiceTokens {
    identity: ServiceToken,
    access: ServiceToken,
    mailboxes: ServiceToken,
    sync: ServiceToken,
    invitations: ServiceToken,
}

/// Puts a service client's token for one service on each request to it that carries no token
/// of its own.
#[derive(Clone, Default)]
pub(crate) struct ServiceToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for ServiceToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.0 {
            if !request.metadata().contains_key("authorization") {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
            }
        }
        Ok(request)
    }
}

/// A generated client on a peer's channel, with the service client's token for that peer.
type Authorized = InterceptedService<PeerChannel, ServiceToken>;

/// The generated clients on `mailroom_clients`' channels (one per service, each call within
/// the settings' deadline), and the signed-in person's token their requests carry.
pub(crate) struct Clients {
    pub(crate) identity: IdentityServiceClient<Authorized>,
    pub(crate) auth: AuthServiceClient<PeerChannel>,
    pub(crate) access: AccessServiceClient<Authorized>,
    pub(crate) mailboxes: MailboxServiceClient<Authorized>,
    pub(crate) sync: SyncServiceClient<Authorized>,
    pub(crate) invitations: InvitationServiceClient<Authorized>,
    /// Each service's event operations (the operator's).
    pub(crate) events: EventOpsClients,
    token: Option<String>,
    bearer: Option<Bearer>,
}

/// The event operations API as each service hosts it, over its own schema.
pub(crate) struct EventOpsClients {
    pub(crate) identity: EventOpsServiceClient<Authorized>,
    pub(crate) access: EventOpsServiceClient<Authorized>,
    pub(crate) mailboxes: EventOpsServiceClient<Authorized>,
    pub(crate) sync: EventOpsServiceClient<Authorized>,
    pub(crate) invitations: EventOpsServiceClient<Authorized>,
}

impl Clients {
    /// Checks that identity answers, signs in with `credentials`, and makes the clients. The
    /// other services are connected on first use, so identity-only commands work without them.
    pub(crate) async fn connect(
        endpoints: &Endpoints,
        credentials: &Credentials,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let channel = |peer: Peer, endpoint: &str, flag: &str| {
            PeerChannel::new(peer, endpoint, settings).with_context(|| {
                format!("{flag} (or the context's endpoints) `{endpoint}` is not a valid URL")
            })
        };
        let identity = IdentityClient::new(
            channel(Peer::Identity, &endpoints.endpoint, "--endpoint")?,
            Caller::Anonymous,
        );
        identity.channel().reachable().await.map_err(|e| {
            Unreachable(format!(
                "cannot reach identity at {}: {e}; is `mailroom dev` or `mailroom serve identity` running (or the context's endpoints and TLS right)?",
                endpoints.endpoint
            ))
        })?;
        let mut auth = identity.raw_auth();
        let token = credentials.sign_in(&mut auth).await?;
        let bearer = token
            .as_deref()
            .map(Bearer::from_token)
            .transpose()
            .context("token is not valid metadata")?;
        let tokens = credentials
            .service_tokens(identity.channel(), settings)
            .await?
            .unwrap_or_default();
        let access = channel(
            Peer::Access,
            &endpoints.access_endpoint,
            "--access-endpoint",
        )?;
        let mailboxes = channel(
            Peer::Mailboxes,
            &endpoints.mailboxes_endpoint,
            "--mailboxes-endpoint",
        )?;
        let sync = channel(Peer::Sync, &endpoints.sync_endpoint, "--sync-endpoint")?;
        let invitations = channel(
            Peer::Invitations,
            &endpoints.invitations_endpoint,
            "--invitations-endpoint",
        )?;
        let events = EventOpsClients {
            identity: EventOpsServiceClient::with_interceptor(
                identity.channel().clone(),
                tokens.identity.clone(),
            ),
            access: EventOpsServiceClient::with_interceptor(access.clone(), tokens.access.clone()),
            mailboxes: EventOpsServiceClient::with_interceptor(
                mailboxes.clone(),
                tokens.mailboxes.clone(),
            ),
            sync: EventOpsServiceClient::with_interceptor(sync.clone(), tokens.sync.clone()),
            invitations: EventOpsServiceClient::with_interceptor(
                invitations.clone(),
                tokens.invitations.clone(),
            ),
        };
        Ok(Self {
            identity: IdentityServiceClient::with_interceptor(
                identity.channel().clone(),
                tokens.identity,
            ),
            auth,
            access: AccessServiceClient::with_interceptor(access, tokens.access),
            mailboxes: MailboxServiceClient::with_interceptor(mailboxes, tokens.mailboxes),
            sync: SyncServiceClient::with_interceptor(sync, tokens.sync),
            invitations: InvitationServiceClient::with_interceptor(invitations, tokens.invitations),
            events,
            token,
            bearer,
        })
    }

    /// The access token the commands run with, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `message` as a request carrying the signed-in person's token, if any.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        match &self.bearer {
            Some(bearer) => bearer.request(message),
            None => tonic::Request::new(message),
        }
    }
}

/// A service's answer, or its refusal as the error `ctl` prints (`Code: message`).
pub(crate) trait Answer<T> {
    fn answer(self) -> anyhow::Result<T>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| Refused::from(s).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(token: bool, email: bool, password: bool, client: bool) -> Credentials {
        Credentials {
            token: token.then(|| "t".to_owned()),
            email: email.then(|| "ann@acme.test".to_owned()),
            password: password.then(|| "p".to_owned()),
            client_id: client.then(|| "operator".to_owned()),
            client_secret: client.then(|| "s".to_owned()),
        }
    }

    /// What the outbound checks guard is exactly what signing in would send.
    #[test]
    fn the_secret_sent_follows_the_order_credentials_are_used_in() {
        use SentSecret::*;
        assert_eq!(credentials(true, true, true, true).sent_secret(), None);
        assert_eq!(
            credentials(false, true, true, true).sent_secret(),
            Some(Password)
        );
        assert_eq!(
            credentials(false, true, false, true).sent_secret(),
            Some(ClientSecret),
            "an email without its password signs no one in"
        );
        assert_eq!(
            credentials(false, false, false, true).sent_secret(),
            Some(ClientSecret)
        );
        assert_eq!(credentials(false, false, false, false).sent_secret(), None);
    }
}
