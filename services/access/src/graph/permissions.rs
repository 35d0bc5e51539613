//! What a user may do, from the indexes: [`OrgGraph::check`] (the hot path: hash lookups and
//! at most one walk up the department tree, no allocation), [`OrgGraph::explain`], and the
//! reverse questions — which mailboxes a user reaches ([`OrgGraph::lookup_mailboxes`],
//! [`OrgGraph::mailbox_scope`]) and who holds a permission ([`OrgGraph::lookup_users`],
//! [`OrgGraph::lookup_org_users`]).

use std::collections::HashSet;

use mailroom_types::{MailboxId, Permission, UserId};

use super::{Explanation, MailboxScope, OrgGraph};
use crate::model::{Audience, ModelError, Relationship};

impl OrgGraph {
    /// Whether `user` belongs to `audience` for a mailbox owned by `owner` (`None` for an
    /// org-level permission, where "supervisors" means anyone heading a department).
    fn in_audience(&self, user: UserId, audience: Audience, owner: Option<UserId>) -> bool {
        self.admins.contains(&user)
            || (audience >= Audience::AdminsAndManagers && self.managers.contains(&user))
            || (audience == Audience::AdminsManagersAndSupervisors
                && match owner {
                    Some(o) => self.supervises(user, o),
                    None => self.headed_by.contains_key(&user),
                })
            || audience == Audience::Everyone
    }

    /// Whether `user` holds the permission on every mailbox of the organisation.
    fn org_wide(&self, user: UserId, audience: Audience) -> bool {
        self.admins.contains(&user)
            || (audience >= Audience::AdminsAndManagers && self.managers.contains(&user))
            || audience == Audience::Everyone
    }

    /// Whether `user` holds `permission` (on `mailbox`, for mailbox permissions).
    pub fn check(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: Option<MailboxId>,
    ) -> Result<bool, ModelError> {
        if permission.on_mailbox() && mailbox.is_none() {
            return Err(ModelError::NeedsMailbox(permission.name()));
        }
        if !self.active(&user) {
            return Ok(false);
        }
        let owner = mailbox.and_then(|m| self.owner.get(&m).copied());
        let is_owner = owner == Some(user);
        let s = &self.settings;
        Ok(match permission {
            Permission::MailboxView => {
                owner.is_some()
                    && (is_owner
                        || self.in_audience(user, s.modify_mailboxes, owner)
                        || self.in_audience(user, s.view_mailbox_list, owner))
            }
            Permission::MailboxModify | Permission::MailboxSync | Permission::MailboxConnect => {
                owner.is_some() && (is_owner || self.in_audience(user, s.modify_mailboxes, owner))
            }
            // Part A (roles engine) replaces this stub.
            Permission::MailboxGrantRead => false,
            Permission::MailboxReadMail => {
                is_owner
                    || mailbox
                        .and_then(|m| self.readers.get(&m))
                        .is_some_and(|r| r.contains(&user))
            }
            Permission::OrgInvite => {
                self.inviters.contains(&user) || self.in_audience(user, s.invite, None)
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => {
                self.admins.contains(&user)
            }
        })
    }

    /// Why `user` holds `permission`: the relationships that grant it, from the resource to
    /// the subject, and a sentence. `None` when the user does not hold it.
    pub fn explain(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: Option<MailboxId>,
    ) -> Result<Option<Explanation>, ModelError> {
        if !self.check(user, permission, mailbox)? {
            return Ok(None);
        }
        let s = &self.settings;
        let owner = mailbox.and_then(|m| self.owner.get(&m).copied().map(|o| (m, o)));
        let explanation = |path: Vec<Relationship>, reason: &'static str| {
            Ok(Some(Explanation {
                path,
                reason: reason.to_string(),
                granted_by: None,
            }))
        };
        if let Some((m, o)) = owner {
            if o == user && permission.on_mailbox() {
                return explanation(vec![Relationship::Owner(m, o)], "owns the mailbox");
            }
        }
        match permission {
            Permission::MailboxReadMail => {
                let m = mailbox.ok_or(ModelError::NeedsMailbox(permission.name()))?;
                explanation(
                    vec![Relationship::Reader(m, user)],
                    "was granted read access to the mailbox",
                )
            }
            Permission::MailboxView
            | Permission::MailboxModify
            | Permission::MailboxSync
            | Permission::MailboxConnect
            | Permission::MailboxGrantRead => {
                let Some((m, o)) = owner else {
                    return Ok(None);
                };
                let own = Relationship::Owner(m, o);
                if self.admins.contains(&user) {
                    return explanation(vec![own, Relationship::Admin(user)], "is an org admin");
                }
                let audience = if permission == Permission::MailboxView {
                    s.view_mailbox_list.max(s.modify_mailboxes)
                } else {
                    s.modify_mailboxes
                };
                if audience >= Audience::AdminsAndManagers && self.managers.contains(&user) {
                    return explanation(
                        vec![own, Relationship::MailboxManager(user)],
                        "manages the organisation's mailboxes",
                    );
                }
                if audience >= Audience::AdminsManagersAndSupervisors {
                    if let Some(mut chain) = self.supervision_chain(user, o) {
                        chain.insert(0, own);
                        return explanation(chain, "supervises the owner");
                    }
                }
                explanation(
                    vec![own],
                    "the organisation's settings give this to everyone",
                )
            }
            Permission::OrgInvite => {
                if self.admins.contains(&user) {
                    explanation(vec![Relationship::Admin(user)], "is an org admin")
                } else if self.inviters.contains(&user) {
                    explanation(vec![Relationship::Inviter(user)], "may invite people")
                } else if s.invite == Audience::Everyone {
                    explanation(
                        vec![Relationship::EveryoneInvites],
                        "everyone in the organisation may invite people",
                    )
                } else if self.managers.contains(&user) {
                    explanation(
                        vec![Relationship::MailboxManager(user)],
                        "the organisation lets mailbox managers invite people",
                    )
                } else {
                    let heads: Vec<Relationship> = self
                        .headed_by
                        .get(&user)
                        .into_iter()
                        .flatten()
                        .take(1)
                        .map(|d| Relationship::Head(*d, user))
                        .collect();
                    explanation(
                        heads,
                        "the organisation lets department heads invite people",
                    )
                }
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => {
                explanation(vec![Relationship::Admin(user)], "is an org admin")
            }
        }
    }

    /// The mailboxes on which `user` holds `permission`, in no particular order.
    pub fn lookup_mailboxes(&self, user: UserId, permission: Permission) -> Vec<MailboxId> {
        if !self.active(&user) || !permission.on_mailbox() {
            return Vec::new();
        }
        let s = &self.settings;
        let own = self.owned.get(&user).into_iter().flatten().copied();
        let audience = match permission {
            Permission::MailboxReadMail => {
                let mut out: HashSet<MailboxId> = own.collect();
                out.extend(self.reads.get(&user).into_iter().flatten().copied());
                return out.into_iter().collect();
            }
            Permission::MailboxView => s.view_mailbox_list.max(s.modify_mailboxes),
            _ => s.modify_mailboxes,
        };
        if self.org_wide(user, audience) {
            return self.owner.keys().copied().collect();
        }
        let mut out: HashSet<MailboxId> = own.collect();
        if audience >= Audience::AdminsManagersAndSupervisors {
            for sub in self.subordinates(user) {
                out.extend(self.owned.get(&sub).into_iter().flatten().copied());
            }
        }
        out.into_iter().collect()
    }

    /// Where `permission` reaches for `user`, as owners and mailboxes rather than a list of
    /// every mailbox: the whole organisation, or the mailboxes of some owners plus some
    /// mailboxes. A service applies it to its own rows, so a mailbox it has just connected is
    /// in scope before this graph has heard of it.
    pub fn mailbox_scope(&self, user: UserId, permission: Permission) -> MailboxScope {
        let mut scope = MailboxScope::default();
        if !self.active(&user) || !permission.on_mailbox() {
            return scope;
        }
        let s = &self.settings;
        let audience = match permission {
            Permission::MailboxReadMail => {
                scope.owners.insert(user);
                scope
                    .mailboxes
                    .extend(self.reads.get(&user).into_iter().flatten().copied());
                return scope;
            }
            Permission::MailboxView => s.view_mailbox_list.max(s.modify_mailboxes),
            _ => s.modify_mailboxes,
        };
        if self.org_wide(user, audience) {
            scope.whole_organization = true;
            return scope;
        }
        scope.owners.insert(user);
        if audience >= Audience::AdminsManagersAndSupervisors {
            scope.owners.extend(self.subordinates(user));
        }
        scope
    }

    /// Everyone in `audience` for a mailbox owned by `owner`.
    fn audience_users(&self, audience: Audience, owner: UserId, out: &mut HashSet<UserId>) {
        out.extend(self.admins.iter().copied());
        if audience >= Audience::AdminsAndManagers {
            out.extend(self.managers.iter().copied());
        }
        if audience >= Audience::AdminsManagersAndSupervisors {
            out.extend(self.supervisors(owner));
        }
        if audience == Audience::Everyone {
            out.extend(self.users.iter().copied());
        }
    }

    /// The active users who hold `permission` on `mailbox`.
    pub fn lookup_users(&self, mailbox: MailboxId, permission: Permission) -> Vec<UserId> {
        let mut out: HashSet<UserId> = HashSet::new();
        let owner = self.owner.get(&mailbox).copied();
        out.extend(owner);
        let s = &self.settings;
        match (permission, owner) {
            (Permission::MailboxReadMail, _) => {
                out.extend(self.readers.get(&mailbox).into_iter().flatten().copied())
            }
            (Permission::MailboxView, Some(o)) => {
                self.audience_users(s.view_mailbox_list.max(s.modify_mailboxes), o, &mut out)
            }
            (
                Permission::MailboxModify | Permission::MailboxSync | Permission::MailboxConnect,
                Some(o),
            ) => self.audience_users(s.modify_mailboxes, o, &mut out),
            _ => {}
        }
        out.retain(|u| self.active(u));
        out.into_iter().collect()
    }

    /// The active users who hold an organisation-level `permission`.
    pub fn lookup_org_users(&self, permission: Permission) -> Vec<UserId> {
        self.users
            .iter()
            .copied()
            .filter(|u| self.check(*u, permission, None).unwrap_or(false))
            .collect()
    }
}
