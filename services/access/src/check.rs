//! Checks: may this user do this, on this mailbox or in their organisation — one question, or
//! up to [`MAX_BULK`] at one revision. Answered from the replica's memory; with `explain`, the
//! relationships that grant the permission, or why it is not held.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_types::{MailboxId, Permission, UserId};

use crate::error::{AccessError, Result};
use crate::graph::OrgGraph;
use crate::replica::State;
use crate::service::{subject_org, Access, MAX_BULK};
use crate::wire::{self, Resource};

impl Access {
    /// Whether the subject holds the permission on the resource.
    pub async fn check(
        &self,
        principal: &Principal,
        req: pb::CheckRequest,
    ) -> Result<pb::CheckResponse> {
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let state = self.replica.read();
        check_one(principal, &state, &req)
    }

    /// Many checks at one revision (the freshest any of them asks for).
    pub async fn check_bulk(
        &self,
        principal: &Principal,
        req: pb::CheckBulkRequest,
    ) -> Result<pb::CheckBulkResponse> {
        if req.checks.len() > MAX_BULK {
            return Err(AccessError::InvalidArgument(format!(
                "at most {MAX_BULK} checks per call, not {}",
                req.checks.len()
            )));
        }
        // One wait, for the freshest revision any check asks for.
        let mut freshest = wire::parse_revision(req.at_least_as_fresh_as.as_ref())?;
        for (i, c) in req.checks.iter().enumerate() {
            let wanted = wire::parse_revision(c.at_least_as_fresh_as.as_ref())
                .map_err(|e| e.at(&format!("checks[{i}]")))?;
            freshest = freshest.max(wanted);
        }
        if let Some(revision) = freshest {
            self.replica.wait_for(revision).await?;
        }
        let state = self.replica.read();
        let results = req
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                check_one(principal, &state, c).map_err(|e| e.at(&format!("checks[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::CheckBulkResponse { results })
    }
}

/// One check, on the state the caller's revision reached.
fn check_one(
    principal: &Principal,
    state: &State,
    req: &pb::CheckRequest,
) -> Result<pb::CheckResponse> {
    let permission = wire::parse_permission(&req.permission)?;
    let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
    let resource = wire::parse_resource(permission, req.resource.as_ref())?;
    let checked_at = Some(wire::revision_token(state.revision()));
    let no = |reason: String| pb::CheckResponse {
        granted_by: None,
        allowed: false,
        path: Vec::new(),
        checked_at: checked_at.clone(),
        reason: if req.explain { reason } else { String::new() },
        subject_unknown: false,
    };
    // Denied only because this replica has not caught up with identity: the caller should
    // retry, not tell a person they may not.
    let not_yet = |reason: &str| pb::CheckResponse {
        subject_unknown: true,
        ..no(reason.into())
    };
    let Some(org) = subject_org(principal, state, subject)? else {
        return Ok(not_yet(
            "access control has not heard of this user (it learns users from identity's events)",
        ));
    };
    let Some(graph) = state.org(org) else {
        return Ok(not_yet("the user's organisation has no relationships yet"));
    };
    let mailbox = match resource {
        Resource::Mailbox(m) if state.org_of_mailbox(m) != Some(org) => {
            return Ok(no(
                "the mailbox is not one of the user's organisation's mailboxes".into(),
            ));
        }
        Resource::Mailbox(m) => Some(m),
        Resource::Org(o) if o != org => {
            return Ok(no("the user belongs to another organisation".into()));
        }
        Resource::Org(_) => None,
    };
    if !req.explain {
        return Ok(pb::CheckResponse {
            granted_by: None,
            allowed: graph.check(subject, permission, mailbox)?,
            path: Vec::new(),
            checked_at,
            reason: String::new(),
            subject_unknown: false,
        });
    }
    Ok(match graph.explain(subject, permission, mailbox)? {
        Some(why) => pb::CheckResponse {
            granted_by: why.granted_by.as_ref().map(|g| {
                let name = graph.role(g.role).map(|r| r.name.as_str()).unwrap_or("");
                wire::role_grant_to_proto(org, g, name)
            }),
            allowed: true,
            path: why
                .path
                .into_iter()
                .map(|r| wire::relationship_to_proto(org, r))
                .collect(),
            checked_at,
            reason: why.reason,
            subject_unknown: false,
        },
        None => no(denial_reason(graph, subject, permission, mailbox)),
    })
}

/// Why `user` does not hold `permission`, for explanations: naming the roles they hold and
/// what each gives of it.
fn denial_reason(
    graph: &OrgGraph,
    user: UserId,
    permission: Permission,
    mailbox: Option<MailboxId>,
) -> String {
    if !graph.is_active(user) {
        return "the user is not active (dismissed, or not yet joined)".into();
    }
    match mailbox {
        Some(m) if graph.owner_of(m).is_none() && permission != Permission::MailboxReadMail => {
            "the mailbox has no owner in the user's organisation".into()
        }
        Some(_) if permission == Permission::MailboxReadMail => {
            "reading mail takes ownership of the mailbox or a reader grant on it; no role gives it, not even Administrator or Supervisor".into()
        }
        _ if permission == Permission::OrgRegisterUsers => {
            "registering users is for org admins only (identity's SetAdmin)".into()
        }
        _ => format!(
            "no role of the user's gives {} here; their roles: {}",
            what(permission),
            graph.describe_roles(user, permission)
        ),
    }
}

/// A permission in words, as the roles page names it.
fn what(permission: Permission) -> &'static str {
    match permission {
        Permission::MailboxView => "see mailboxes in the list",
        Permission::MailboxModify | Permission::MailboxSync => "change mailbox settings",
        Permission::MailboxConnect => "connect mailboxes",
        Permission::MailboxGrantRead => "grant read access",
        Permission::MailboxReadMail => "read mail",
        Permission::OrgInvite => "invite people",
        Permission::OrgManagePermissions => "configure access permissions",
        Permission::OrgRegisterUsers => "register users",
    }
}
