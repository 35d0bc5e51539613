//! Access control's client: where a permission reaches, who may read a mailbox, whether a
//! person holds a permission on their organisation.
//!
//! The permission rules live in access control only; callers ask and apply the answer. The
//! registry asks for a *scope* ([`MailboxScope`]: the whole organisation, or the mailboxes
//! of some owners plus some mailboxes) rather than a list of mailboxes, and applies it in its
//! own SQL; the sync asks the same question narrowed to one owner.

use std::collections::HashMap;

use mailroom_proto::access::v1 as pb;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};

use crate::error::{Peer, PeerError};

/// How many "who may read" questions are asked at once.
const READERS_AT_ONCE: usize = 32;
/// Readers asked for per page (access's largest page for `LookupSubjects`).
const READERS_PAGE: i32 = 10_000;

crate::typed::typed_client!(
    /// Access control, called as the caller this client was made with.
    AccessClient,
    Peer::Access,
    pb::access_service_client::AccessServiceClient<crate::PeerChannel>
);

/// Where a permission reaches, as access control answers `LookupMailboxScope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxScope {
    WholeOrganization,
    Some {
        /// Every mailbox these people own.
        owners: Vec<UserId>,
        /// And these mailboxes besides.
        mailboxes: Vec<MailboxId>,
    },
}

impl MailboxScope {
    /// Whether a mailbox with this id and owner is in scope.
    pub fn covers(&self, mailbox: MailboxId, owner: UserId) -> bool {
        match self {
            MailboxScope::WholeOrganization => true,
            MailboxScope::Some { owners, mailboxes } => {
                owners.contains(&owner) || mailboxes.contains(&mailbox)
            }
        }
    }
}

/// The ids of a packed field: 16 bytes each (a trailing partial id, which access never
/// sends, is left out).
fn unpacked<T>(packed: &[u8], id: fn(uuid::Uuid) -> T) -> Vec<T> {
    if !packed.len().is_multiple_of(16) {
        tracing::warn!(
            bytes = packed.len(),
            "access control answered a packed id list whose length is not a multiple of 16; \
             the partial id is left out (the scope is narrower, never wider)"
        );
    }
    packed
        .chunks_exact(16)
        .map(|bytes| {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(bytes);
            id(uuid::Uuid::from_bytes(raw))
        })
        .collect()
}

fn user(id: UserId) -> Option<pb::SubjectRef> {
    Some(pb::SubjectRef {
        object: Some(pb::ObjectRef {
            r#type: "user".into(),
            id: id.to_string(),
        }),
        relation: String::new(),
    })
}

impl AccessClient {
    /// The user's scope on `permission` (a mailbox permission) in their organisation;
    /// `only_owners` narrows the owners to those named (a check for one or a few owners).
    #[tracing::instrument(skip_all, fields(permission = permission.name()))]
    pub async fn mailbox_scope(
        &self,
        user_id: UserId,
        permission: Permission,
        only_owners: &[UserId],
    ) -> Result<MailboxScope, PeerError> {
        let request = self
            .request(pb::LookupMailboxScopeRequest {
                subject: user(user_id),
                permission: permission.name().into(),
                only_owner_user_ids: only_owners.iter().map(UserId::to_string).collect(),
                at_least_as_fresh_as: None,
                packed_ids: true,
            })
            .await?;
        let answer = self
            .raw()
            .lookup_mailbox_scope(request)
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        if answer.org_id.is_empty() {
            return Err(not_yet_known());
        }
        if answer.whole_organization {
            return Ok(MailboxScope::WholeOrganization);
        }
        // Packed as asked; an access replica older than `packed_ids` answers with strings.
        let mut owners = unpacked(&answer.packed_owner_user_ids, UserId::from_uuid);
        owners.extend(
            answer
                .owner_user_ids
                .iter()
                .filter_map(|id| id.parse::<UserId>().ok()),
        );
        let mut mailboxes = unpacked(&answer.packed_mailbox_ids, MailboxId::from_uuid);
        mailboxes.extend(
            answer
                .mailbox_ids
                .iter()
                .filter_map(|id| id.parse::<MailboxId>().ok()),
        );
        Ok(MailboxScope::Some { owners, mailboxes })
    }

    /// Who may read each mailbox's mail (the list's "access by" column), asked a few at a
    /// time. A mailbox access control has not heard of yet is read by its owner alone.
    #[tracing::instrument(skip_all, fields(mailboxes = mailboxes.len()))]
    pub async fn readers(
        &self,
        mailboxes: &[(MailboxId, UserId)],
    ) -> Result<HashMap<MailboxId, Vec<UserId>>, PeerError> {
        let mut out = HashMap::with_capacity(mailboxes.len());
        for chunk in mailboxes.chunks(READERS_AT_ONCE) {
            let lookups = chunk
                .iter()
                .map(|&(mailbox, owner)| self.readers_of(mailbox, owner));
            for answer in futures::future::join_all(lookups).await {
                let (mailbox, readers) = answer?;
                out.insert(mailbox, readers);
            }
        }
        Ok(out)
    }

    /// Every reader of one mailbox, following the pages of `LookupSubjects`.
    async fn readers_of(
        &self,
        mailbox: MailboxId,
        owner: UserId,
    ) -> Result<(MailboxId, Vec<UserId>), PeerError> {
        let (mut readers, mut page_token) = (Vec::new(), String::new());
        loop {
            let request = self
                .request(pb::LookupSubjectsRequest {
                    resource: Some(pb::ObjectRef {
                        r#type: "mailbox".into(),
                        id: mailbox.to_string(),
                    }),
                    permission: Permission::MailboxReadMail.name().into(),
                    subject_type: "user".into(),
                    at_least_as_fresh_as: None,
                    page_size: READERS_PAGE,
                    page_token,
                })
                .await?;
            let page = match self.raw().lookup_subjects(request).await {
                Ok(answer) => answer.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => return Ok((mailbox, vec![owner])),
                Err(s) => return Err(self.refused(s)),
            };
            readers.extend(
                page.subject_ids
                    .iter()
                    .filter_map(|id| id.parse::<UserId>().ok()),
            );
            if page.next_page_token.is_empty() {
                return Ok((mailbox, readers));
            }
            page_token = page.next_page_token;
        }
    }

    /// Whether `user_id` holds `permission` (an organisation permission) on `org`. A user
    /// access control has not heard of yet (made a moment ago) is
    /// [`PeerError::NotYetKnown`]: "retry shortly", not "you may not".
    #[tracing::instrument(skip_all, fields(permission = permission.name()))]
    pub async fn check_org(
        &self,
        org: OrgId,
        user_id: UserId,
        permission: Permission,
    ) -> Result<bool, PeerError> {
        let request = self
            .request(pb::CheckRequest {
                subject: user(user_id),
                permission: permission.name().into(),
                resource: Some(pb::ObjectRef {
                    r#type: "org".into(),
                    id: org.to_string(),
                }),
                at_least_as_fresh_as: None,
                explain: false,
            })
            .await?;
        match self.raw().check(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if !answer.allowed && answer.subject_unknown {
                    return Err(not_yet_known());
                }
                Ok(answer.allowed)
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(self.refused(s)),
        }
    }
}

/// Access control has not heard of the caller's account yet.
fn not_yet_known() -> PeerError {
    PeerError::NotYetKnown {
        peer: Peer::Access,
        message: "access control has not heard of your account yet (an account made a moment ago is known once identity's event reaches it); retry shortly".into(),
        transient: crate::error::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_ids_are_read_sixteen_bytes_at_a_time() {
        let a = uuid::Uuid::now_v7();
        let b = uuid::Uuid::now_v7();
        let mut packed = Vec::new();
        packed.extend_from_slice(a.as_bytes());
        packed.extend_from_slice(b.as_bytes());
        assert_eq!(
            unpacked(&packed, UserId::from_uuid),
            [UserId::from_uuid(a), UserId::from_uuid(b)]
        );
        // A trailing partial id is no id.
        packed.extend_from_slice(&[1, 2, 3]);
        assert_eq!(unpacked(&packed, UserId::from_uuid).len(), 2);
        assert!(unpacked(&[], MailboxId::from_uuid).is_empty());
    }

    #[test]
    fn a_scope_covers_its_owners_mailboxes_and_its_mailboxes() {
        let (ann, bob) = (UserId::new(), UserId::new());
        let (anns, bobs, shared) = (MailboxId::new(), MailboxId::new(), MailboxId::new());
        let scope = MailboxScope::Some {
            owners: vec![ann],
            mailboxes: vec![shared],
        };
        assert!(scope.covers(anns, ann));
        assert!(scope.covers(shared, bob));
        assert!(!scope.covers(bobs, bob));
        assert!(MailboxScope::WholeOrganization.covers(bobs, bob));
    }
}
