//! The services the sync calls, as itself (its service token): the registry for a mailbox's
//! login (handed to the sync service only) and access control for who may see or read a
//! mailbox.

use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::mailboxes::v1 as mpb;
use mailroom_platform::service_auth::ServiceCredential;
use secrecy::SecretString;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{Result, SyncError};
use crate::imap::{Login, Security};

/// A mailbox's login and what the worker needs besides.
pub struct MailboxLogin {
    pub login: Login,
    pub in_crm: bool,
}

#[derive(Clone)]
pub struct Peers {
    mailboxes: mpb::mailbox_service_client::MailboxServiceClient<Channel>,
    access: apb::access_service_client::AccessServiceClient<Channel>,
    credential: ServiceCredential,
}

fn lazy(endpoint: &str) -> Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())
        .map_err(|e| SyncError::Internal(format!("endpoint `{endpoint}`: {e}")))?
        .connect_lazy())
}

fn unavailable(who: &str, status: &tonic::Status) -> SyncError {
    SyncError::Unavailable(format!(
        "{who} did not answer ({}: {})",
        status.code(),
        status.message()
    ))
}

impl Peers {
    pub fn new(
        mailboxes_endpoint: &str,
        access_endpoint: &str,
        credential: ServiceCredential,
    ) -> Result<Self> {
        Ok(Self {
            mailboxes: mpb::mailbox_service_client::MailboxServiceClient::new(lazy(
                mailboxes_endpoint,
            )?),
            access: apb::access_service_client::AccessServiceClient::new(lazy(access_endpoint)?),
            credential,
        })
    }

    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        self.credential
            .request(message)
            .await
            .map_err(|e| SyncError::Unavailable(e.to_string()))
    }

    /// The mailbox's IMAP login; `None` when the registry no longer has it.
    pub async fn login(&self, mailbox: Uuid) -> Result<Option<MailboxLogin>> {
        let request = self
            .request(mpb::GetMailboxCredentialsRequest {
                mailbox_id: mailbox.to_string(),
            })
            .await?;
        let answer = match self
            .mailboxes
            .clone()
            .get_mailbox_credentials(request)
            .await
        {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.credential.forget().await;
                return Err(unavailable("the mailbox registry", &s));
            }
            Err(s) => return Err(unavailable("the mailbox registry", &s)),
        };
        let security = match mpb::Security::try_from(answer.imap_security) {
            Ok(mpb::Security::Tls) => Security::Tls,
            Ok(mpb::Security::Starttls) => Security::StartTls,
            _ => Security::None,
        };
        Ok(Some(MailboxLogin {
            login: Login {
                host: answer.imap_host,
                port: u16::try_from(answer.imap_port).unwrap_or(993),
                security,
                username: answer.imap_username,
                password: SecretString::from(answer.password),
            },
            in_crm: answer.in_crm,
        }))
    }

    /// Whether `user` has `permission` on `mailbox` (owned by `owner`). Asked as a scope
    /// narrowed to the owner, as the registry asks, so a mailbox access control has not yet
    /// heard of is judged by its owner, whom the sync knows from the registry's events.
    pub async fn allowed(
        &self,
        user: Uuid,
        permission: &str,
        mailbox: Uuid,
        owner: Uuid,
    ) -> Result<bool> {
        let request = self
            .request(apb::LookupMailboxScopeRequest {
                subject: Some(apb::SubjectRef {
                    object: Some(apb::ObjectRef {
                        r#type: "user".into(),
                        id: user.to_string(),
                    }),
                    relation: String::new(),
                }),
                permission: permission.into(),
                only_owner_user_ids: vec![owner.to_string()],
                at_least_as_fresh_as: None,
            })
            .await?;
        let answer = match self.access.clone().lookup_mailbox_scope(request).await {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.credential.forget().await;
                return Err(unavailable("access control", &s));
            }
            Err(s) => return Err(unavailable("access control", &s)),
        };
        if answer.org_id.is_empty() {
            return Err(SyncError::Unavailable(
                "access control has not heard of your account yet (an account made a moment ago is known once identity's event reaches it); retry shortly".into(),
            ));
        }
        let (owner, mailbox) = (owner.to_string(), mailbox.to_string());
        Ok(answer.whole_organization
            || answer.owner_user_ids.contains(&owner)
            || answer.mailbox_ids.contains(&mailbox))
    }
}
