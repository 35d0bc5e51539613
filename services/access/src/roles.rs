//! An organisation's roles and their assignments through the API: list, get, create, update
//! (field mask, etag), clone, delete, assign, unassign, and the assignments by role or by
//! person.
//!
//! Everyone in the organisation may list and read its roles. Changing them takes an org admin
//! or a holder of `org.manage_permissions`, and a non-admin may pass on no more than they hold
//! (`OrgGraph::may_delegate`): a role they create, edit or delete, and every subject they
//! assign or unassign, must lie within their own grants and reach. As with relationship writes
//! ([`crate::write`]) each change is decided on this replica's state first, then again under
//! the changelog lock on the latest state (`Access::locked_and_current`), goes to PostgreSQL
//! through a [`Writer`] with its events in the same transaction, and is applied here before
//! the call answers with the revision to pass to Check.
//!
//! Taking a role away gives too: whoever is left with no explicit role falls back to the roles
//! of everyone else, so a non-admin unassigning or deleting a role must also have been able to
//! give each of its subjects those (`OrgGraph::may_fall_back`). Hidden roles are made, copied
//! and changed by org admins only, so nobody else adds powers out of the default listing.
//! Display names carry no control or invisible formatting characters, so two roles cannot
//! look alike by them.
//!
//! Administrator is identity's admin flag: it cannot be edited, assigned, unassigned or
//! deleted here. Supervisor and Manager may be edited, not deleted.
//!
//! Known limits (review S8/S10, notes only): a stored role the replica cannot read is
//! skipped, so its holders fall back to everyone else's roles (fails open as far as those
//! reach); deleting a department in identity drops its assignments without a RoleUnassigned
//! event; two people who may grant reading over each other's mailboxes may grant each other.

use mailroom_aip as aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_types::{DepartmentId, OrgId, RoleId, UserId};
use sqlx::PgConnection;

use crate::error::{AccessError, Result};
use crate::events;
use crate::graph::OrgGraph;
use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef};
use crate::service::{configures_access, denied, may_ask_about, Access};
use crate::store::{self, StoredRole, Writer};
use crate::wire::{self, RoleExtras};

/// Why Administrator is refused any change.
const ADMINISTRATOR_FIXED: &str =
    "Administrator is every org admin; make someone an admin in identity (SetAdmin)";
/// Why Supervisor and Manager are refused deletion.
const BUILTIN_KEPT: &str = "Supervisor and Manager cannot be deleted; unassign them instead";
/// Why a caller who does not configure access is refused.
const NOT_CONFIGURER: &str = "changing roles takes an org admin or a role that may configure access permissions; ask an org admin";
/// The paths UpdateRole takes.
const UPDATE_PATHS: [&str; 9] = [
    "display_name",
    "hidden",
    "permissions",
    "permissions.view_mailbox_list",
    "permissions.connect_mailboxes",
    "permissions.modify_mailboxes",
    "permissions.grant_read_access",
    "permissions.invite",
    "permissions.manage_permissions",
];
/// The longest display name.
const MAX_NAME: usize = 100;

/// A role that is not the caller's organisation's, or not at all: one answer for both.
fn role_not_found(id: impl std::fmt::Display) -> AccessError {
    AccessError::NotFound(format!(
        "role `{id}` was not found in your organisation (ListRoles shows its roles)"
    ))
}

/// Whether `c` would hide in a name: a control character, or an invisible formatting one
/// (soft hyphen, zero-width and joiner characters, direction marks, embeddings, overrides and
/// isolates, word joiner and invisible operators, byte order mark).
fn hidden_in_names(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{61C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// A display name, trimmed: 1–100 characters, no control or invisible formatting characters.
fn display_name(field: &str, name: &str) -> Result<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME {
        return Err(AccessError::InvalidArgument(format!(
            "`{field}` must be 1–{MAX_NAME} characters (after trimming spaces), not {chars}"
        )));
    }
    if let Some(c) = name.chars().find(|c| hidden_in_names(*c)) {
        let what = if c.is_control() {
            "a control character (line break, tab, …)"
        } else {
            "an invisible formatting character, which would make names that look alike"
        };
        return Err(AccessError::InvalidArgument(format!(
            "`{field}` may not contain U+{:04X}, {what}; remove it",
            u32::from(c)
        )));
    }
    Ok(name.to_owned())
}

/// `grants` passed on to `subject` (`None`: as a role definition) by `caller`, refused with
/// the graph's reason when the caller could not have given it.
fn delegate(
    graph: &OrgGraph,
    caller: UserId,
    grants: Grants,
    subject: Option<Assignee>,
) -> Result<()> {
    graph
        .may_delegate(caller, grants, subject)
        .map_err(AccessError::PermissionDenied)
}

/// D4: a non-admin may change or remove a role only if they could have made it, with every
/// one of its current assignments.
fn may_undo(graph: &OrgGraph, caller: UserId, role: RoleId, grants: Grants) -> Result<()> {
    delegate(graph, caller, grants, None)?;
    let mut assignees: Vec<Assignee> = graph.assignees(role).collect();
    assignees.sort_unstable();
    for a in assignees {
        delegate(graph, caller, grants, Some(a))?;
    }
    Ok(())
}

/// Unassigning `role` from `subject` (or deleting it, `deleting`) by `caller`: they must have
/// been able to give the role to the subject and, for whoever it leaves with no explicit role,
/// everyone else's roles.
fn may_take_away(
    graph: &OrgGraph,
    caller: UserId,
    role: RoleId,
    grants: Grants,
    subject: Assignee,
    deleting: bool,
) -> Result<()> {
    delegate(graph, caller, grants, Some(subject))?;
    graph
        .may_fall_back(caller, role, subject, deleting)
        .map_err(AccessError::PermissionDenied)
}

/// D4 for DeleteRole: [`may_undo`], and every subject of the role may fall back to everyone
/// else's roles ([`may_take_away`]).
fn may_delete(graph: &OrgGraph, caller: UserId, role: RoleId, grants: Grants) -> Result<()> {
    delegate(graph, caller, grants, None)?;
    let mut assignees: Vec<Assignee> = graph.assignees(role).collect();
    assignees.sort_unstable();
    for a in assignees {
        may_take_away(graph, caller, role, grants, a, true)?;
    }
    Ok(())
}

/// Hidden roles are an org admin's: `hidden` (the role as it would be) by anyone else is
/// refused with `why`.
fn may_hide(graph: &OrgGraph, caller: UserId, hidden: bool, why: &str) -> Result<()> {
    if hidden && !graph.is_admin(caller) {
        return Err(denied(why));
    }
    Ok(())
}

/// The paths of an update mask, each once, in the order first given.
fn distinct_paths(paths: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    paths
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// Whether `department` is one `org` has (access knows a department from its members, heads,
/// parent or children).
async fn department_known(
    conn: &mut PgConnection,
    org: OrgId,
    department: DepartmentId,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM relationships WHERE org_id = $1 AND ( \
           (kind IN ('head', 'parent') AND object_id = $2) \
           OR (kind IN ('member', 'parent') AND subject_id = $2)))",
    )
    .bind(org)
    .bind(department)
    .fetch_one(conn)
    .await?)
}

/// The role's fields an update mask names, from `from` onto `onto`.
fn apply_mask(onto: &mut RoleDef, from: &pb::Role, paths: &[String]) -> Result<()> {
    let given = || {
        from.permissions.as_ref().ok_or_else(|| {
            AccessError::InvalidArgument(
                "`role.permissions` is required when update_mask names permissions".into(),
            )
        })
    };
    for path in paths {
        match path.as_str() {
            "display_name" => onto.name = display_name("role.display_name", &from.display_name)?,
            "hidden" => onto.hidden = from.hidden,
            "permissions" => {
                onto.grants = wire::permissions_from_proto("role.permissions", given()?)?
            }
            "permissions.view_mailbox_list" => {
                onto.grants.view_mailbox_list = wire::scope_from_proto(
                    "role.permissions.view_mailbox_list",
                    given()?.view_mailbox_list,
                )?
            }
            "permissions.connect_mailboxes" => {
                onto.grants.connect_mailboxes = wire::scope_from_proto(
                    "role.permissions.connect_mailboxes",
                    given()?.connect_mailboxes,
                )?
            }
            "permissions.modify_mailboxes" => {
                onto.grants.modify_mailboxes = wire::scope_from_proto(
                    "role.permissions.modify_mailboxes",
                    given()?.modify_mailboxes,
                )?
            }
            "permissions.grant_read_access" => {
                onto.grants.grant_read_access = wire::scope_from_proto(
                    "role.permissions.grant_read_access",
                    given()?.grant_read_access,
                )?
            }
            "permissions.invite" => onto.grants.invite = given()?.invite,
            "permissions.manage_permissions" => {
                onto.grants.manage_permissions = given()?.manage_permissions
            }
            other => {
                return Err(AccessError::InvalidArgument(format!(
                    "`update_mask` path `{}` cannot be updated; allowed: {}",
                    aip::shown(other),
                    UPDATE_PATHS.join(", ")
                )))
            }
        }
    }
    Ok(())
}

/// The extras of a stored role, with the revision of the write that answers with it.
fn extras(stored: &StoredRole, written_at: Option<i64>) -> RoleExtras {
    RoleExtras {
        create_time: Some(stored.create_time),
        update_time: Some(stored.update_time),
        assignment_count: stored.assignment_count,
        written_at,
    }
}

impl Access {
    /// Decides, on this replica's current state, whether the caller may change roles of
    /// `org`: services may; a user must configure access there and pass `decide`.
    fn may_configure(
        &self,
        principal: &Principal,
        org: OrgId,
        decide: impl Fn(&OrgGraph, UserId) -> Result<()>,
    ) -> Result<()> {
        let Principal::User { user_id, .. } = principal else {
            return Ok(());
        };
        let state = self.replica.read();
        let empty = OrgGraph::new();
        let graph = state.org(org).unwrap_or(&empty);
        if !configures_access(graph, *user_id) {
            return Err(denied(NOT_CONFIGURER));
        }
        decide(graph, *user_id)
    }

    /// The stored role `id`, when the caller may see it: a user's own organisation's only
    /// (another's is not found, said as of one that does not exist).
    async fn visible_role(
        &self,
        conn: &mut PgConnection,
        principal: &Principal,
        field: &str,
        id: &str,
    ) -> Result<StoredRole> {
        let role: RoleId = wire::parse_id(field, id)?;
        let stored = store::role(conn, role)
            .await?
            .ok_or_else(|| role_not_found(role))?;
        if let Principal::User { org_id, .. } = principal {
            if *org_id != stored.org {
                return Err(role_not_found(role));
            }
        }
        Ok(stored)
    }

    /// The organisation's roles (hidden ones only when asked), builtins first, then by name.
    pub async fn list_roles(
        &self,
        principal: &Principal,
        req: pb::ListRolesRequest,
    ) -> Result<pb::ListRolesResponse> {
        let org = self.org_of_call(principal, &req.org_id)?;
        let page_size = aip::page_size(req.page_size, 100, 1_000)? as usize;
        let query = format!("roles|{org}|{}", req.show_hidden);
        let offset: usize = aip::decode_page_token(&query, &req.page_token)?.unwrap_or(0);
        let mut conn = self.pool.acquire().await?;
        let roles: Vec<StoredRole> = store::org_roles(&mut conn, org)
            .await?
            .into_iter()
            .filter(|r| req.show_hidden || !r.def.hidden)
            .collect();
        let end = roles.len().min(offset.saturating_add(page_size));
        let next_page_token = if end < roles.len() {
            aip::encode_page_token(&query, &end)
        } else {
            String::new()
        };
        Ok(pb::ListRolesResponse {
            roles: roles
                .get(offset.min(end)..end)
                .unwrap_or_default()
                .iter()
                .map(|r| wire::role_to_proto(r.org, &r.def, extras(r, None)))
                .collect(),
            next_page_token,
        })
    }

    /// One role of the caller's organisation.
    pub async fn get_role(
        &self,
        principal: &Principal,
        req: pb::GetRoleRequest,
    ) -> Result<pb::Role> {
        let mut conn = self.pool.acquire().await?;
        let stored = self
            .visible_role(&mut conn, principal, "id", &req.id)
            .await?;
        Ok(wire::role_to_proto(
            stored.org,
            &stored.def,
            extras(&stored, None),
        ))
    }

    /// A new custom role.
    pub async fn create_role(
        &self,
        principal: &Principal,
        req: pb::CreateRoleRequest,
    ) -> Result<pb::Role> {
        let role = req
            .role
            .ok_or_else(|| AccessError::InvalidArgument("`role` is required".into()))?;
        let org = self.org_of_call(principal, &role.org_id)?;
        let def = RoleDef {
            id: RoleId::new(),
            builtin: None,
            name: display_name("role.display_name", &role.display_name)?,
            hidden: role.hidden,
            grants: match &role.permissions {
                Some(p) => wire::permissions_from_proto("role.permissions", p)?,
                None => Grants::NONE,
            },
            version: 1,
        };
        self.create(principal, org, def, None).await
    }

    /// A custom copy of a role ("<name> (copy)" unless another name is given).
    pub async fn clone_role(
        &self,
        principal: &Principal,
        req: pb::CloneRoleRequest,
    ) -> Result<pb::Role> {
        let source = {
            let mut conn = self.pool.acquire().await?;
            self.visible_role(&mut conn, principal, "id", &req.id)
                .await?
        };
        let name = if req.display_name.trim().is_empty() {
            display_name(
                "display_name",
                &format!("{} (copy)", source.def.name.trim()),
            )?
        } else {
            display_name("display_name", &req.display_name)?
        };
        let def = RoleDef {
            id: RoleId::new(),
            builtin: None,
            name,
            hidden: source.def.hidden,
            grants: source.def.grants,
            version: 1,
        };
        self.create(principal, source.org, def, Some(source.def.id))
            .await
    }

    /// Creates `def` in `org` (a copy of `cloned_from`, if any) once the caller may.
    async fn create(
        &self,
        principal: &Principal,
        org: OrgId,
        def: RoleDef,
        cloned_from: Option<RoleId>,
    ) -> Result<pb::Role> {
        let why_hidden = if cloned_from.is_some() {
            "only org admins may copy a hidden role (its copy would be hidden too); ask an org admin"
        } else {
            "only org admins may create hidden roles; create it visible (hidden = false) or ask an org admin"
        };
        let decide = |g: &OrgGraph, caller: UserId| {
            may_hide(g, caller, def.hidden, why_hidden)?;
            delegate(g, caller, def.grants, None)
        };
        self.may_configure(principal, org, decide)?;
        let mut tx = self.locked_and_current().await?;
        self.may_configure(principal, org, decide)?;
        let mut w = Writer::begin(&mut tx, org).await?;
        w.create_role(&def, cloned_from).await?;
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        let stored = store::role(&mut tx, def.id)
            .await?
            .ok_or_else(|| AccessError::Internal("a role just created is not there".into()))?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(wire::role_to_proto(
            org,
            &stored.def,
            extras(&stored, Some(revision)),
        ))
    }

    /// Changes the fields the mask names (AIP-134); a stale etag is refused with ABORTED.
    pub async fn update_role(
        &self,
        principal: &Principal,
        req: pb::UpdateRoleRequest,
    ) -> Result<pb::Role> {
        let role = req
            .role
            .ok_or_else(|| AccessError::InvalidArgument("`role` is required".into()))?;
        let paths = distinct_paths(req.update_mask.map(|m| m.paths).unwrap_or_default());
        if paths.is_empty() {
            return Err(AccessError::InvalidArgument(format!(
                "`update_mask` is required: list the fields to change; allowed: {}",
                UPDATE_PATHS.join(", ")
            )));
        }
        let expected = wire::parse_etag(&role.etag)?;
        let current = {
            let mut conn = self.pool.acquire().await?;
            self.visible_role(&mut conn, principal, "role.id", &role.id)
                .await?
        };
        if current.def.builtin == Some(Builtin::Administrator) {
            return Err(AccessError::FailedPrecondition(ADMINISTRATOR_FIXED.into()));
        }
        let org = current.org;
        let changed = |current: &RoleDef| -> Result<RoleDef> {
            let mut new = current.clone();
            apply_mask(&mut new, &role, &paths)?;
            Ok(new)
        };
        let decide = |old: &RoleDef, new: &RoleDef| {
            let (id, hidden, old, new) = (old.id, new.hidden, old.grants, new.grants);
            move |g: &OrgGraph, caller: UserId| {
                may_hide(
                    g,
                    caller,
                    hidden,
                    "only org admins may hide a role or change a hidden one; ask an org admin",
                )?;
                may_undo(g, caller, id, old)?;
                may_undo(g, caller, id, new)
            }
        };
        let new = changed(&current.def)?;
        self.may_configure(principal, org, decide(&current.def, &new))?;
        let mut tx = self.locked_and_current().await?;
        let current = store::role(&mut tx, current.def.id)
            .await?
            .filter(|r| r.org == org)
            .ok_or_else(|| role_not_found(current.def.id))?;
        let new = changed(&current.def)?;
        self.may_configure(principal, org, decide(&current.def, &new))?;
        let mut w = Writer::begin(&mut tx, org).await?;
        let updated = w.update_role(&new, expected, paths).await?;
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        let stored = store::role(&mut tx, updated.id)
            .await?
            .ok_or_else(|| role_not_found(updated.id))?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(wire::role_to_proto(
            org,
            &stored.def,
            extras(&stored, Some(revision)),
        ))
    }

    /// Deletes a custom role and its assignments.
    pub async fn delete_role(
        &self,
        principal: &Principal,
        req: pb::DeleteRoleRequest,
    ) -> Result<pb::DeleteRoleResponse> {
        let expected = wire::parse_etag(&req.etag)?;
        let current = {
            let mut conn = self.pool.acquire().await?;
            self.visible_role(&mut conn, principal, "id", &req.id)
                .await?
        };
        let refuse_builtin = |def: &RoleDef| match def.builtin {
            Some(Builtin::Administrator) => {
                Err(AccessError::FailedPrecondition(ADMINISTRATOR_FIXED.into()))
            }
            Some(_) => Err(AccessError::FailedPrecondition(BUILTIN_KEPT.into())),
            None => Ok(()),
        };
        refuse_builtin(&current.def)?;
        let org = current.org;
        let (id, grants) = (current.def.id, current.def.grants);
        self.may_configure(principal, org, |g, caller| {
            may_delete(g, caller, id, grants)
        })?;
        let mut tx = self.locked_and_current().await?;
        let current = store::role(&mut tx, id)
            .await?
            .filter(|r| r.org == org)
            .ok_or_else(|| role_not_found(id))?;
        refuse_builtin(&current.def)?;
        let grants = current.def.grants;
        self.may_configure(principal, org, |g, caller| {
            may_delete(g, caller, id, grants)
        })?;
        let mut w = Writer::begin(&mut tx, org).await?;
        w.delete_role(id, expected).await?;
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(pb::DeleteRoleResponse {
            deleted_at: Some(wire::revision_token(revision)),
        })
    }

    /// Assigns a role to a person, a department (with or without the ones below), everyone
    /// heading a department, or everyone else.
    pub async fn assign_role(
        &self,
        principal: &Principal,
        req: pb::AssignRoleRequest,
    ) -> Result<pb::RoleAssignment> {
        let (role, org, who, revision) = self
            .assignment(principal, &req.role_id, req.subject.as_ref(), false)
            .await?;
        Ok(pb::RoleAssignment {
            role_id: role.id.to_string(),
            role_display_name: role.name,
            subject: Some(wire::assignee_to_proto(org, role.id, who)),
            via: Vec::new(),
            written_at: Some(wire::revision_token(revision)),
        })
    }

    /// Removes one assignment of a role.
    pub async fn unassign_role(
        &self,
        principal: &Principal,
        req: pb::UnassignRoleRequest,
    ) -> Result<pb::UnassignRoleResponse> {
        let (.., revision) = self
            .assignment(principal, &req.role_id, req.subject.as_ref(), true)
            .await?;
        Ok(pb::UnassignRoleResponse {
            unassigned_at: Some(wire::revision_token(revision)),
        })
    }

    /// Authorises and makes one assignment or its removal: the role, its organisation, the
    /// subject and the revision.
    async fn assignment(
        &self,
        principal: &Principal,
        role_id: &str,
        subject: Option<&pb::SubjectRef>,
        removing: bool,
    ) -> Result<(RoleDef, OrgId, Assignee, i64)> {
        let (who, named_org) = wire::parse_assignee("subject", subject)?;
        let mut conn = self.pool.acquire().await?;
        let current = self
            .visible_role(&mut conn, principal, "role_id", role_id)
            .await?;
        if current.def.builtin == Some(Builtin::Administrator) {
            return Err(AccessError::FailedPrecondition(ADMINISTRATOR_FIXED.into()));
        }
        let org = current.org;
        if !removing {
            if let Assignee::Members(d) | Assignee::Tree(d) = who {
                if !department_known(&mut conn, org, d).await? {
                    return Err(AccessError::NotFound(format!(
                        "department `{d}` was not found in your organisation (access control knows a department once identity has given it a member, a head or a parent)"
                    )));
                }
            }
        }
        drop(conn);
        if named_org.is_some_and(|o| o != org) {
            return Err(AccessError::NotFound(format!(
                "organisation `{}` was not found (the subject names the role's own organisation)",
                named_org.unwrap_or_default()
            )));
        }
        if let Assignee::User(u) = who {
            if self.replica.read().org_of_user(u) != Some(org) {
                return Err(AccessError::user_not_found(u));
            }
        }
        let id = current.def.id;
        let decide = |grants: Grants| {
            move |g: &OrgGraph, caller: UserId| {
                if removing {
                    may_take_away(g, caller, id, grants, who, false)
                } else {
                    delegate(g, caller, grants, Some(who))
                }
            }
        };
        self.may_configure(principal, org, decide(current.def.grants))?;
        let mut tx = self.locked_and_current().await?;
        let current = store::role(&mut tx, id)
            .await?
            .filter(|r| r.org == org)
            .ok_or_else(|| role_not_found(id))?;
        self.may_configure(principal, org, decide(current.def.grants))?;
        let mut w = Writer::begin(&mut tx, org).await?;
        let rel = Relationship::Assignee(id, who);
        if removing {
            w.delete(rel).await?;
        } else {
            w.write(rel).await?;
        }
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok((current.def, org, who, revision))
    }

    /// The assignments of one role (from the table, for those who configure access), or the
    /// roles one person holds and how (from the graph, for them and those who configure
    /// access).
    pub async fn list_role_assignments(
        &self,
        principal: &Principal,
        req: pb::ListRoleAssignmentsRequest,
    ) -> Result<pb::ListRoleAssignmentsResponse> {
        let page_size = aip::page_size(req.page_size, 100, 1_000)? as usize;
        let requested_org: Option<OrgId> = match principal {
            Principal::User { .. } => Some(self.org_of_call(principal, &req.org_id)?),
            Principal::Service { .. } => wire::parse_optional_id("org_id", &req.org_id)?,
        };
        let query = format!("assignments|{}|{}|{}", req.org_id, req.role_id, req.user_id);
        let offset: usize = aip::decode_page_token(&query, &req.page_token)?.unwrap_or(0);
        let page = |all: Vec<pb::RoleAssignment>| {
            let end = all.len().min(offset.saturating_add(page_size));
            let next = if end < all.len() {
                aip::encode_page_token(&query, &end)
            } else {
                String::new()
            };
            let items = all
                .into_iter()
                .skip(offset)
                .take(end.saturating_sub(offset))
                .collect();
            (items, next)
        };
        match (req.role_id.is_empty(), req.user_id.is_empty()) {
            (false, true) => {
                let mut conn = self.pool.acquire().await?;
                let role = self
                    .visible_role(&mut conn, principal, "role_id", &req.role_id)
                    .await?;
                if requested_org.is_some_and(|o| o != role.org) {
                    return Err(role_not_found(role.def.id));
                }
                self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
                self.may_configure(principal, role.org, |_, _| Ok(()))
                    .map_err(|_| {
                        denied("only org admins and those whose role configures access permissions may list a role's assignments; ask about a person (user_id) for your own")
                    })?;
                let listed_at = self.replica.revision();
                let rels = store::role_assignments(&mut conn, role.org, role.def.id).await?;
                let all = rels
                    .into_iter()
                    .filter_map(|rel| match rel {
                        Relationship::Assignee(_, who) => Some(pb::RoleAssignment {
                            role_id: role.def.id.to_string(),
                            role_display_name: role.def.name.clone(),
                            subject: Some(wire::assignee_to_proto(role.org, role.def.id, who)),
                            via: Vec::new(),
                            written_at: None,
                        }),
                        _ => None,
                    })
                    .collect();
                let (assignments, next_page_token) = page(all);
                Ok(pb::ListRoleAssignmentsResponse {
                    assignments,
                    next_page_token,
                    listed_at: Some(wire::revision_token(listed_at)),
                })
            }
            (true, false) => {
                let user: UserId = wire::parse_id("user_id", &req.user_id)?;
                self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
                let state = self.replica.read();
                let listed_at = state.revision();
                let org = match state.org_of_user(user) {
                    Some(org) if requested_org.is_none_or(|o| o == org) => org,
                    _ => return Err(AccessError::user_not_found(user)),
                };
                may_ask_about(principal, &state, user, org)?;
                let all = match state.org(org) {
                    None => Vec::new(),
                    Some(graph) => graph
                        .held_roles(user)
                        .into_iter()
                        .map(|held| {
                            let name = graph
                                .role(held.role)
                                .map(|r| r.name.clone())
                                .unwrap_or_default();
                            let (subject, mut via) = match held.assignment {
                                Relationship::Assignee(role, who) => {
                                    (wire::assignee_to_proto(org, role, who), Vec::new())
                                }
                                admin => (
                                    pb::SubjectRef {
                                        object: Some(pb::ObjectRef {
                                            r#type: "user".into(),
                                            id: user.to_string(),
                                        }),
                                        relation: String::new(),
                                    },
                                    vec![wire::relationship_to_proto(org, admin)],
                                ),
                            };
                            via.extend(
                                held.via
                                    .into_iter()
                                    .map(|r| wire::relationship_to_proto(org, r)),
                            );
                            pb::RoleAssignment {
                                role_id: held.role.to_string(),
                                role_display_name: name,
                                subject: Some(subject),
                                via,
                                written_at: None,
                            }
                        })
                        .collect(),
                };
                drop(state);
                let (assignments, next_page_token) = page(all);
                Ok(pb::ListRoleAssignmentsResponse {
                    assignments,
                    next_page_token,
                    listed_at: Some(wire::revision_token(listed_at)),
                })
            }
            _ => Err(AccessError::InvalidArgument(
                "name exactly one of `role_id` (its assignments) and `user_id` (the roles a person holds)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{display_name, distinct_paths};
    use crate::error::AccessError;

    #[test]
    fn names_with_invisible_or_control_characters_are_refused_by_code_point() {
        assert_eq!(display_name("f", "  HR  ").expect("plain"), "HR");
        assert_eq!(
            display_name("f", "Zoë’s team").expect("accents"),
            "Zoë’s team"
        );
        for (name, code) in [
            ("H\u{200B}R", "U+200B"),
            ("H\u{AD}R", "U+00AD"),
            ("\u{202E}RH", "U+202E"),
            ("H\u{2066}R", "U+2066"),
            ("H\u{FEFF}R", "U+FEFF"),
            ("H\u{61C}R", "U+061C"),
            ("two\nlines", "U+000A"),
        ] {
            match display_name("role.display_name", name) {
                Err(AccessError::InvalidArgument(msg)) => {
                    assert!(msg.contains(code), "{name:?}: {msg}");
                    assert!(
                        msg.starts_with("`role.display_name` may not contain"),
                        "{msg}"
                    );
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn update_mask_paths_are_kept_once_in_their_first_order() {
        let given = [
            "hidden",
            "display_name",
            "hidden",
            "permissions.invite",
            "display_name",
        ];
        assert_eq!(
            distinct_paths(given.iter().map(|p| (*p).to_owned()).collect()),
            ["hidden", "display_name", "permissions.invite"]
        );
    }
}
