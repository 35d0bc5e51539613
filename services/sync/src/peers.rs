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

    /// Whether `user` has `permission` on `mailbox`.
    pub async fn allowed(&self, user: Uuid, permission: &str, mailbox: Uuid) -> Result<bool> {
        let request = self
            .request(apb::CheckRequest {
                subject: Some(apb::SubjectRef {
                    object: Some(apb::ObjectRef {
                        r#type: "user".into(),
                        id: user.to_string(),
                    }),
                    relation: String::new(),
                }),
                permission: permission.into(),
                resource: Some(apb::ObjectRef {
                    r#type: "mailbox".into(),
                    id: mailbox.to_string(),
                }),
                at_least_as_fresh_as: None,
                explain: false,
            })
            .await?;
        match self.access.clone().check(request).await {
            Ok(a) => Ok(a.into_inner().allowed),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.credential.forget().await;
                Err(unavailable("access control", &s))
            }
            Err(s) => Err(unavailable("access control", &s)),
        }
    }
}
