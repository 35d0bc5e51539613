//! The services the sync calls, as itself (its service token, through `mailroom_clients`):
//! the registry for a mailbox's login (handed to the sync service only) and access control
//! for who may see or read a mailbox. What this file adds is the sync's reading of their
//! answers: the registry's login as an IMAP [`Login`], access control's scope as yes or no.

use mailroom_clients::{AccessClient, ChannelError, MailboxesClient, ServicePeers};
use mailroom_mail::{Login, Security};
use mailroom_platform::proto::mailboxes::v1 as mpb;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};

use crate::error::Result;

/// Whose a mailbox is, as the registry has it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub org_id: OrgId,
    pub owner_user_id: UserId,
}

/// A mailbox's login and what the worker needs besides.
pub struct MailboxLogin {
    pub login: Login,
    pub in_crm: bool,
}

#[derive(Clone)]
pub struct Peers {
    mailboxes: MailboxesClient,
    access: AccessClient,
}

impl Peers {
    pub fn new(
        peers: &ServicePeers,
        mailboxes_endpoint: &str,
        access_endpoint: &str,
    ) -> std::result::Result<Self, ChannelError> {
        Ok(Self {
            mailboxes: peers.mailboxes(mailboxes_endpoint)?,
            access: peers.access(access_endpoint)?,
        })
    }

    /// The mailbox's IMAP login; `None` when the registry no longer has it.
    pub async fn login(&self, mailbox: MailboxId) -> Result<Option<MailboxLogin>> {
        let Some(answer) = self.mailboxes.mailbox_login(mailbox).await? else {
            return Ok(None);
        };
        // Plain text only when the registry says so: a value this build does not know
        // (a newer registry) means TLS, as the registry itself reads an unset one, so a
        // password never crosses the network in clear by a version mismatch.
        let security = match answer.imap_security {
            mpb::Security::None => Security::None,
            mpb::Security::Starttls => Security::StartTls,
            mpb::Security::Tls | mpb::Security::Unspecified => Security::Tls,
        };
        Ok(Some(MailboxLogin {
            login: Login {
                host: answer.imap_host,
                port: answer.imap_port,
                security,
                username: answer.imap_username,
                password: answer.password,
            },
            in_crm: answer.in_crm,
        }))
    }

    /// Whose `mailbox` is, when the registry has it (for a mailbox connected a moment ago,
    /// before its event reaches the schedule). The login in the answer is dropped unused.
    pub async fn registered(&self, mailbox: MailboxId) -> Result<Option<Registered>> {
        let Some(answer) = self.mailboxes.mailbox_login(mailbox).await? else {
            return Ok(None);
        };
        Ok(match (answer.org_id, answer.owner_user_id) {
            (Some(org_id), Some(owner_user_id)) => Some(Registered {
                org_id,
                owner_user_id,
            }),
            _ => None,
        })
    }

    /// Whether `user` has `permission` on `mailbox` (owned by `owner`). Asked as a scope
    /// narrowed to the owner, as the registry asks, so a mailbox access control has not yet
    /// heard of is judged by its owner, whom the sync knows from the registry's events.
    pub async fn allowed(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: MailboxId,
        owner: UserId,
    ) -> Result<bool> {
        Ok(self
            .access
            .mailbox_scope(user, permission, &[owner])
            .await?
            .covers(mailbox, owner))
    }
}
