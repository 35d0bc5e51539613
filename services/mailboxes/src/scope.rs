//! What access control says the caller may do, in a form the registry applies to its own rows.
//!
//! The permission rules live in access control only. The registry asks it, as itself (its
//! service token), for the caller's *scope* on a permission — the whole organisation, or the
//! mailboxes of a set of owners plus a set of mailboxes — and applies that inside its SQL
//! (`owner_user_id = ANY($owners) OR id = ANY($mailboxes)`). Asking for a scope rather than
//! for the list of mailbox ids (LookupResources) keeps the answer small (owners, not their
//! mailboxes), lets PostgreSQL filter, sort and page in one query, and works for a mailbox
//! the registry connected a moment ago, before access control has heard of it: the owner
//! column is the registry's own.

use std::collections::HashMap;

use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::service_auth::ServiceCredential;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{MailboxError, Result};

/// Mailbox permissions as access control names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    View,
    Modify,
    Sync,
    ReadMail,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::View => "mailbox.view",
            Permission::Modify => "mailbox.modify",
            Permission::Sync => "mailbox.sync",
            Permission::ReadMail => "mailbox.read_mail",
        }
    }
}

/// Where a permission reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    WholeOrganization,
    Some {
        owners: Vec<Uuid>,
        mailboxes: Vec<Uuid>,
    },
}

impl Scope {
    pub fn nothing() -> Scope {
        Scope::Some {
            owners: Vec::new(),
            mailboxes: Vec::new(),
        }
    }

    /// Whether a mailbox with this id and owner is in scope.
    pub fn covers(&self, mailbox: Uuid, owner: Uuid) -> bool {
        match self {
            Scope::WholeOrganization => true,
            Scope::Some { owners, mailboxes } => {
                owners.contains(&owner) || mailboxes.contains(&mailbox)
            }
        }
    }
}

/// Access control, called as this service.
#[derive(Clone)]
pub struct AccessClient {
    client: apb::access_service_client::AccessServiceClient<Channel>,
    credential: ServiceCredential,
}

fn unavailable(status: &tonic::Status) -> MailboxError {
    MailboxError::Unavailable(format!(
        "access control did not answer ({}: {})",
        status.code(),
        status.message()
    ))
}

impl AccessClient {
    pub fn new(endpoint: &str, credential: ServiceCredential) -> Result<Self> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| MailboxError::Internal(format!("access endpoint `{endpoint}`: {e}")))?
            .connect_lazy();
        Ok(Self {
            client: apb::access_service_client::AccessServiceClient::new(channel),
            credential,
        })
    }

    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        self.credential
            .request(message)
            .await
            .map_err(|e| MailboxError::Unavailable(e.to_string()))
    }

    /// The user's scope on `permission` in their organisation; `only` narrows the owners to
    /// those named (a check for one or a few owners).
    #[tracing::instrument(skip_all, fields(permission = permission.name()))]
    pub async fn scope(&self, user: Uuid, permission: Permission, only: &[Uuid]) -> Result<Scope> {
        let request = self
            .request(apb::LookupMailboxScopeRequest {
                subject: Some(apb::SubjectRef {
                    object: Some(apb::ObjectRef {
                        r#type: "user".into(),
                        id: user.to_string(),
                    }),
                    relation: String::new(),
                }),
                permission: permission.name().into(),
                only_owner_user_ids: only.iter().map(Uuid::to_string).collect(),
                at_least_as_fresh_as: None,
            })
            .await?;
        let mut client = self.client.clone();
        let answer = match client.lookup_mailbox_scope(request).await {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.credential.forget().await;
                return Err(unavailable(&s));
            }
            Err(s) => return Err(unavailable(&s)),
        };
        if answer.org_id.is_empty() {
            return Err(MailboxError::Unavailable(
                "access control has not heard of your account yet (an account made a moment ago is known once identity's event reaches it); retry shortly".into(),
            ));
        }
        if answer.whole_organization {
            return Ok(Scope::WholeOrganization);
        }
        let parse = |ids: &[String]| -> Vec<Uuid> {
            ids.iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect()
        };
        Ok(Scope::Some {
            owners: parse(&answer.owner_user_ids),
            mailboxes: parse(&answer.mailbox_ids),
        })
    }

    /// Who may read each mailbox's mail (the "access by" column), asked concurrently. A
    /// mailbox access control has not heard of yet is read by its owner alone.
    #[tracing::instrument(skip_all, fields(mailboxes = mailboxes.len()))]
    pub async fn readers(&self, mailboxes: &[(Uuid, Uuid)]) -> Result<HashMap<Uuid, Vec<Uuid>>> {
        let mut out = HashMap::with_capacity(mailboxes.len());
        for chunk in mailboxes.chunks(32) {
            let mut lookups = Vec::with_capacity(chunk.len());
            for &(mailbox, owner) in chunk {
                lookups.push(self.clone().readers_of(mailbox, owner));
            }
            for answer in futures::future::join_all(lookups).await {
                let (mailbox, readers) = answer?;
                out.insert(mailbox, readers);
            }
        }
        Ok(out)
    }

    async fn readers_of(self, mailbox: Uuid, owner: Uuid) -> Result<(Uuid, Vec<Uuid>)> {
        let request = self
            .request(apb::LookupSubjectsRequest {
                resource: Some(apb::ObjectRef {
                    r#type: "mailbox".into(),
                    id: mailbox.to_string(),
                }),
                permission: Permission::ReadMail.name().into(),
                subject_type: "user".into(),
                at_least_as_fresh_as: None,
            })
            .await?;
        let mut client = self.client.clone();
        match client.lookup_subjects(request).await {
            Ok(a) => Ok((
                mailbox,
                a.into_inner()
                    .subject_ids
                    .iter()
                    .filter_map(|id| Uuid::parse_str(id).ok())
                    .collect(),
            )),
            Err(s) if s.code() == tonic::Code::NotFound => Ok((mailbox, vec![owner])),
            Err(s) => Err(unavailable(&s)),
        }
    }
}
