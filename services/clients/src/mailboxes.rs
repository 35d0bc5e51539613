//! The mailbox registry's client: a mailbox's login, which the registry hands to the sync
//! service only.

use mailroom_proto::mailboxes::v1 as pb;
use mailroom_types::{MailboxId, OrgId, UserId};
use secrecy::SecretString;

use crate::error::{Peer, PeerError};

/// The IMAP port when the registry's answer has none that fits.
const IMAPS_PORT: u16 = 993;

crate::typed::typed_client!(
    /// The mailbox registry, called as the caller this client was made with.
    MailboxesClient,
    Peer::Mailboxes,
    pb::mailbox_service_client::MailboxServiceClient<crate::PeerChannel>
);

/// Where and as whom a mailbox's IMAP login is made, and what the sync needs besides. The
/// caller turns it into its own IMAP login.
#[derive(Clone)]
pub struct MailboxLogin {
    pub imap_host: String,
    pub imap_port: u16,
    /// `Unspecified` when the registry sent a value this build does not know.
    pub imap_security: pb::Security,
    pub imap_username: String,
    pub password: SecretString,
    pub in_crm: bool,
    /// The mailbox's organisation and owner as the registry has them now (`None` if the
    /// answer held no id).
    pub org_id: Option<OrgId>,
    pub owner_user_id: Option<UserId>,
}

impl std::fmt::Debug for MailboxLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxLogin")
            .field("imap_host", &self.imap_host)
            .field("imap_port", &self.imap_port)
            .field("imap_security", &self.imap_security)
            .field("imap_username", &self.imap_username)
            .field("in_crm", &self.in_crm)
            .field("org_id", &self.org_id)
            .field("owner_user_id", &self.owner_user_id)
            .finish_non_exhaustive()
    }
}

impl MailboxesClient {
    /// The mailbox's login; `None` when the registry no longer has the mailbox.
    #[tracing::instrument(skip_all, fields(%mailbox))]
    pub async fn mailbox_login(
        &self,
        mailbox: MailboxId,
    ) -> Result<Option<MailboxLogin>, PeerError> {
        let request = self
            .request(pb::GetMailboxCredentialsRequest {
                mailbox_id: mailbox.to_string(),
            })
            .await?;
        let answer = match self.raw().get_mailbox_credentials(request).await {
            Ok(answer) => answer.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.refused(s)),
        };
        Ok(Some(MailboxLogin {
            imap_security: pb::Security::try_from(answer.imap_security)
                .unwrap_or(pb::Security::Unspecified),
            imap_port: u16::try_from(answer.imap_port).unwrap_or(IMAPS_PORT),
            imap_host: answer.imap_host,
            imap_username: answer.imap_username,
            password: SecretString::from(answer.password),
            in_crm: answer.in_crm,
            org_id: OrgId::parse("org_id", &answer.org_id).ok(),
            owner_user_id: UserId::parse("owner_user_id", &answer.owner_user_id).ok(),
        }))
    }
}
