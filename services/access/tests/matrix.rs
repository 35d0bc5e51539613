//! The permission matrix of the roles issue: every default role and some custom ones × every
//! permission, on a mailbox inside the roles' subtree and on one outside it, each cell
//! asserted. Reading mail is a column of its own: no role gives it, not even one with
//! everything at All.

use std::collections::HashSet;

use mailroom_access::model::Relationship::{self, *};
use mailroom_access::model::{Assignee, Builtin, Grants, RoleDef, Scope};
use mailroom_access::OrgGraph;
use mailroom_types::{DepartmentId, MailboxId, Permission, RoleId, UserId};
use uuid::Uuid;

struct Org {
    graph: OrgGraph,
    company: DepartmentId,
    sales: DepartmentId,
    east: DepartmentId,
    other: DepartmentId,
    administrator: RoleId,
    supervisor: RoleId,
    manager: RoleId,
    no_mail: RoleId,
    admin: UserId,
    ceo: UserId,
    sales_head: UserId,
    east_head: UserId,
    owner: UserId,
    reader: UserId,
    peer: UserId,
    dismissed: UserId,
    other_head: UserId,
    outsider: UserId,
    hr: UserId,
    quiet: UserId,
    everything: UserId,
    inside: MailboxId,
    outside: MailboxId,
}

/// A fresh id of whichever kind the place wants.
fn id<Id: From<Uuid>>() -> Id {
    Uuid::new_v4().into()
}

fn role(builtin: Option<Builtin>, name: &str, grants: Grants) -> RoleDef {
    RoleDef {
        id: id(),
        builtin,
        name: name.into(),
        hidden: false,
        grants,
        version: 1,
    }
}

fn builtin(b: Builtin) -> RoleDef {
    role(Some(b), b.default_name(), b.default_grants())
}

fn scopes(view: Scope, connect: Scope, modify: Scope, grant_read: Scope) -> Grants {
    Grants {
        view_mailbox_list: view,
        connect_mailboxes: connect,
        modify_mailboxes: modify,
        grant_read_access: grant_read,
        invite: false,
        manage_permissions: false,
    }
}

/// Company → Sales → East; Other at the top. The owner works in East and owns `inside`; the
/// outsider works in Other and owns `outside`. The CEO heads Company (two levels above East),
/// the Sales head one level above it. Default roles (Supervisor to heads, Manager to everyone
/// else), plus: "HR" (view all, connect and change own) for the HR person; "No mail" (nothing)
/// for a quiet East member and for the Sales head; "Everything" (all at All, invite, manage)
/// for one person in Other.
fn org() -> Org {
    let administrator = builtin(Builtin::Administrator);
    let supervisor = builtin(Builtin::Supervisor);
    let manager = builtin(Builtin::Manager);
    let hr = role(
        None,
        "HR",
        scopes(Scope::All, Scope::Own, Scope::Own, Scope::None),
    );
    let no_mail = role(None, "No mail", Grants::NONE);
    let everything = role(None, "Everything", Grants::ALL);
    let mut o = Org {
        graph: OrgGraph::new(),
        company: id(),
        sales: id(),
        east: id(),
        other: id(),
        administrator: administrator.id,
        supervisor: supervisor.id,
        manager: manager.id,
        no_mail: no_mail.id,
        admin: id(),
        ceo: id(),
        sales_head: id(),
        east_head: id(),
        owner: id(),
        reader: id(),
        peer: id(),
        dismissed: id(),
        other_head: id(),
        outsider: id(),
        hr: id(),
        quiet: id(),
        everything: id(),
        inside: id(),
        outside: id(),
    };
    for u in [
        o.admin,
        o.ceo,
        o.sales_head,
        o.east_head,
        o.owner,
        o.reader,
        o.peer,
        o.dismissed,
        o.other_head,
        o.outsider,
        o.hr,
        o.quiet,
        o.everything,
    ] {
        o.graph.set_user(u, true);
    }
    let (hr_id, everything_id) = (hr.id, everything.id);
    for r in [administrator, supervisor, manager, hr, no_mail, everything] {
        o.graph.put_role(r);
    }
    let rels = [
        Parent(o.sales, o.company),
        Parent(o.east, o.sales),
        Admin(o.admin),
        Head(o.company, o.ceo),
        Head(o.sales, o.sales_head),
        Head(o.east, o.east_head),
        Head(o.other, o.other_head),
        Member(o.admin, o.company),
        Member(o.ceo, o.company),
        Member(o.sales_head, o.sales),
        Member(o.east_head, o.east),
        Member(o.owner, o.east),
        Member(o.peer, o.east),
        Member(o.quiet, o.east),
        Member(o.reader, o.other),
        Member(o.outsider, o.other),
        Member(o.hr, o.other),
        Member(o.everything, o.other),
        // The dismissed user was an admin and headed Sales: none of it counts any more.
        Admin(o.dismissed),
        Head(o.sales, o.dismissed),
        Owner(o.inside, o.owner),
        Owner(o.outside, o.outsider),
        Reader(o.inside, o.reader),
        Relationship::Assignee(o.supervisor, Assignee::Heads),
        Relationship::Assignee(o.manager, Assignee::EveryoneElse),
        Relationship::Assignee(hr_id, Assignee::User(o.hr)),
        Relationship::Assignee(o.no_mail, Assignee::User(o.quiet)),
        Relationship::Assignee(o.no_mail, Assignee::User(o.sales_head)),
        Relationship::Assignee(everything_id, Assignee::User(o.everything)),
    ];
    for r in rels {
        o.graph.write(r).expect("valid relationship");
    }
    o.graph.set_user(o.dismissed, false);
    o
}

/// The mailbox columns, in the order of the letters of a cell: view, modify, sync, connect,
/// grant read, read mail.
const ON_MAILBOX: [(char, Permission); 6] = [
    ('v', Permission::MailboxView),
    ('m', Permission::MailboxModify),
    ('s', Permission::MailboxSync),
    ('c', Permission::MailboxConnect),
    ('g', Permission::MailboxGrantRead),
    ('r', Permission::MailboxReadMail),
];

/// The organisation columns: invite, manage permissions, register users.
const ON_ORG: [(char, Permission); 3] = [
    ('i', Permission::OrgInvite),
    ('p', Permission::OrgManagePermissions),
    ('u', Permission::OrgRegisterUsers),
];

/// A row as letters: the column's letter where the permission is held, `-` where not.
fn on_mailbox(graph: &OrgGraph, user: UserId, mailbox: MailboxId) -> String {
    ON_MAILBOX
        .iter()
        .map(|(c, p)| {
            if graph.check(user, *p, Some(mailbox)).expect("check") {
                *c
            } else {
                '-'
            }
        })
        .collect()
}

fn on_org(graph: &OrgGraph, user: UserId) -> String {
    ON_ORG
        .iter()
        .map(|(c, p)| {
            if graph.check(user, *p, None).expect("check") {
                *c
            } else {
                '-'
            }
        })
        .collect()
}

fn assert_rows(o: &Org, rows: &[(&str, UserId, &str, &str, &str)]) {
    for (who, user, inside, outside, org) in rows {
        assert_eq!(
            on_mailbox(&o.graph, *user, o.inside),
            *inside,
            "{who} on the mailbox inside the subtree"
        );
        assert_eq!(
            on_mailbox(&o.graph, *user, o.outside),
            *outside,
            "{who} on the mailbox outside the subtree"
        );
        assert_eq!(on_org(&o.graph, *user), *org, "{who} on the organisation");
    }
}

#[test]
fn every_role_and_permission_on_mailboxes_inside_and_outside_the_subtree() {
    let mut o = org();
    let stranger: UserId = id(); // a user of another organisation: unknown to this graph
    let rows = [
        //  who                                   user          inside    outside   org
        ("Administrator", o.admin, "vmscg-", "vmscg-", "ipu"),
        (
            "Supervisor, direct head",
            o.east_head,
            "v-----",
            "------",
            "---",
        ),
        (
            "Supervisor, two levels up",
            o.ceo,
            "v-----",
            "------",
            "---",
        ),
        (
            "Supervisor of another subtree",
            o.other_head,
            "------",
            "v-----",
            "---",
        ),
        ("Manager (everyone else)", o.peer, "------", "------", "---"),
        ("owner (Manager)", o.owner, "vmscgr", "------", "---"),
        (
            "owner outside (Manager)",
            o.outsider,
            "------",
            "vmscgr",
            "---",
        ),
        ("reader (Manager)", o.reader, "-----r", "------", "---"),
        (
            "HR: view all, connect and change own",
            o.hr,
            "v-----",
            "v-----",
            "---",
        ),
        ("No mail", o.quiet, "------", "------", "---"),
        (
            "head who also holds No mail",
            o.sales_head,
            "v-----",
            "------",
            "---",
        ),
        ("Everything at All", o.everything, "vmscg-", "vmscg-", "ip-"),
        (
            "dismissed (was admin and head)",
            o.dismissed,
            "------",
            "------",
            "---",
        ),
        (
            "user of another organisation",
            stranger,
            "------",
            "------",
            "---",
        ),
    ];
    assert_rows(&o, &rows);
    // The roles behind the rows: explicit roles replace Manager, the union keeps Supervisor.
    let held = |g: &OrgGraph, u: UserId| -> HashSet<RoleId> {
        g.held_roles(u).into_iter().map(|h| h.role).collect()
    };
    assert_eq!(
        held(&o.graph, o.sales_head),
        HashSet::from([o.supervisor, o.no_mail])
    );
    assert_eq!(held(&o.graph, o.quiet), HashSet::from([o.no_mail]));
    assert_eq!(held(&o.graph, o.peer), HashSet::from([o.manager]));
    assert!(held(&o.graph, o.admin).contains(&o.administrator));
    assert!(held(&o.graph, o.dismissed).is_empty());
    // Taking "No mail" away from the quiet member gives Manager back.
    assert!(o
        .graph
        .delete(Relationship::Assignee(o.no_mail, Assignee::User(o.quiet))));
    assert_eq!(held(&o.graph, o.quiet), HashSet::from([o.manager]));
}

#[test]
fn no_mail_takes_an_owner_s_own_mailbox_away_but_not_its_mail() {
    let mut o = org();
    o.graph
        .write(Relationship::Assignee(o.no_mail, Assignee::User(o.owner)))
        .unwrap();
    o.graph.refresh();
    assert_rows(
        &o,
        &[("owner with No mail", o.owner, "-----r", "------", "---")],
    );
    assert!(o
        .graph
        .lookup_mailboxes(o.owner, Permission::MailboxView)
        .is_empty());
    assert_eq!(
        o.graph
            .lookup_mailboxes(o.owner, Permission::MailboxReadMail),
        vec![o.inside]
    );
    let connect = o
        .graph
        .mailbox_scope_for(o.owner, Permission::MailboxConnect, &[o.owner]);
    assert!(
        !connect.whole_organization && !connect.owners.contains(&o.owner),
        "cannot connect a mailbox of their own either"
    );
}

#[test]
fn department_heads_connect_and_change_mailboxes_of_their_department_and_below() {
    let mut o = org();
    let heads = role(
        None,
        "Department heads",
        scopes(
            Scope::Department,
            Scope::Department,
            Scope::Department,
            Scope::None,
        ),
    );
    let heads_id = heads.id;
    o.graph.put_role(heads);
    o.graph
        .write(Relationship::Assignee(heads_id, Assignee::Heads))
        .unwrap();
    let rows = [
        ("direct head", o.east_head, "vmsc--", "------", "---"),
        ("head two levels up", o.ceo, "vmsc--", "------", "---"),
        (
            "head of another subtree",
            o.other_head,
            "------",
            "vmsc--",
            "---",
        ),
        (
            "head who also holds No mail",
            o.sales_head,
            "vmsc--",
            "------",
            "---",
        ),
        ("not a head", o.peer, "------", "------", "---"),
        ("owner", o.owner, "vmscgr", "------", "---"),
    ];
    assert_rows(&o, &rows);
    // Onboarding: a new East employee has no mailbox yet; her head may connect one for her,
    // the head of Other may not.
    let nina: UserId = id();
    o.graph.set_user(nina, true);
    o.graph.write(Member(nina, o.east)).unwrap();
    let for_nina = |g: &OrgGraph, u: UserId| {
        let s = g.mailbox_scope_for(u, Permission::MailboxConnect, &[nina]);
        s.whole_organization || s.owners.contains(&nina)
    };
    assert!(for_nina(&o.graph, o.east_head));
    assert!(for_nina(&o.graph, o.ceo));
    assert!(!for_nina(&o.graph, o.other_head));
    assert!(!for_nina(&o.graph, o.peer));
    let why = o
        .graph
        .explain(o.east_head, Permission::MailboxConnect, Some(o.inside))
        .unwrap()
        .expect("the head may connect");
    let granted = why.granted_by.expect("a role granted it");
    assert_eq!(granted.role, heads_id, "Department heads, not Supervisor");
    assert_eq!(granted.scope, Scope::Department);
    assert_eq!(
        granted.assignment,
        Relationship::Assignee(heads_id, Assignee::Heads)
    );
    // Unassigned, the heads are Supervisors again.
    o.graph.refresh();
    assert!(o
        .graph
        .delete(Relationship::Assignee(heads_id, Assignee::Heads)));
    assert_rows(
        &o,
        &[("direct head", o.east_head, "v-----", "------", "---")],
    );
    assert!(!for_nina(&o.graph, o.east_head));
}

#[test]
fn admins_supervisors_and_everything_read_mail_only_with_a_grant() {
    let mut o = org();
    for user in [o.admin, o.ceo, o.east_head, o.hr, o.everything] {
        assert!(!o
            .graph
            .check(user, Permission::MailboxReadMail, Some(o.inside))
            .unwrap());
        o.graph.write(Reader(o.inside, user)).unwrap();
        assert!(o
            .graph
            .check(user, Permission::MailboxReadMail, Some(o.inside))
            .unwrap());
        assert!(
            !o.graph
                .check(user, Permission::MailboxReadMail, Some(o.outside))
                .unwrap(),
            "the grant is for that mailbox only"
        );
        o.graph.delete(Reader(o.inside, user));
        assert!(
            !o.graph
                .check(user, Permission::MailboxReadMail, Some(o.inside))
                .unwrap(),
            "revoked"
        );
    }
}

#[test]
fn moving_a_department_re_parents_supervision_at_once() {
    let mut o = org();
    assert!(o
        .graph
        .check(o.ceo, Permission::MailboxView, Some(o.inside))
        .unwrap());
    assert!(!o
        .graph
        .check(o.other_head, Permission::MailboxView, Some(o.inside))
        .unwrap());
    o.graph.write(Parent(o.east, o.other)).unwrap();
    assert!(!o
        .graph
        .check(o.ceo, Permission::MailboxView, Some(o.inside))
        .unwrap());
    assert!(o
        .graph
        .check(o.other_head, Permission::MailboxView, Some(o.inside))
        .unwrap());
    assert!(
        o.graph
            .check(o.east_head, Permission::MailboxView, Some(o.inside))
            .unwrap(),
        "the direct head stays"
    );
    // And a move that would make a cycle is refused, leaving the tree as it was.
    assert!(o.graph.write(Parent(o.other, o.east)).is_err());
    assert!(o
        .graph
        .check(o.other_head, Permission::MailboxView, Some(o.inside))
        .unwrap());
}

#[test]
fn inviting_follows_roles_and_the_organisation_flag() {
    let mut o = org();
    assert!(!o.graph.check(o.peer, Permission::OrgInvite, None).unwrap());
    let inviters = role(
        None,
        "Inviters",
        Grants {
            invite: true,
            ..Builtin::Manager.default_grants()
        },
    );
    let inviters_id = inviters.id;
    o.graph.put_role(inviters);
    o.graph
        .write(Relationship::Assignee(inviters_id, Assignee::User(o.peer)))
        .unwrap();
    assert!(o.graph.check(o.peer, Permission::OrgInvite, None).unwrap());
    assert!(!o.graph.check(o.owner, Permission::OrgInvite, None).unwrap());
    o.graph.write(EveryoneInvites).unwrap();
    assert!(o.graph.check(o.owner, Permission::OrgInvite, None).unwrap());
    assert!(
        o.graph.check(o.quiet, Permission::OrgInvite, None).unwrap(),
        "even with No mail"
    );
    assert!(!o
        .graph
        .check(o.dismissed, Permission::OrgInvite, None)
        .unwrap());
    assert!(
        !o.graph
            .check(UserId::new(), Permission::OrgInvite, None)
            .unwrap(),
        "strangers never invite"
    );
    o.graph.delete(EveryoneInvites);
    assert!(!o.graph.check(o.owner, Permission::OrgInvite, None).unwrap());
    let mut invite_holders = o.graph.lookup_org_users(Permission::OrgInvite);
    invite_holders.sort();
    let mut expected = vec![o.admin, o.peer, o.everything];
    expected.sort();
    assert_eq!(invite_holders, expected);
}

#[test]
fn lookups_answer_the_list_and_the_access_by_column() {
    let o = org();
    let mut visible = o.graph.lookup_mailboxes(o.ceo, Permission::MailboxView);
    visible.sort();
    assert_eq!(visible, vec![o.inside]);
    assert_eq!(
        o.graph
            .lookup_mailboxes(o.admin, Permission::MailboxView)
            .len(),
        2
    );
    assert_eq!(
        o.graph
            .lookup_mailboxes(o.hr, Permission::MailboxView)
            .len(),
        2,
        "HR lists every mailbox"
    );
    assert!(o
        .graph
        .lookup_mailboxes(o.hr, Permission::MailboxModify)
        .is_empty());
    assert!(o
        .graph
        .lookup_mailboxes(o.dismissed, Permission::MailboxView)
        .is_empty());
    let mut readers = o.graph.lookup_users(o.inside, Permission::MailboxReadMail);
    readers.sort();
    let mut expected = vec![o.owner, o.reader];
    expected.sort();
    assert_eq!(
        readers, expected,
        "access by: owner and reader, not admin, supervisors or Everything"
    );
    let mut viewers = o.graph.lookup_users(o.inside, Permission::MailboxView);
    viewers.sort();
    let mut expected = vec![
        o.admin,
        o.ceo,
        o.sales_head,
        o.east_head,
        o.owner,
        o.hr,
        o.everything,
    ];
    expected.sort();
    assert_eq!(viewers, expected);
}

#[test]
fn editing_the_default_roles_widens_and_narrows_them() {
    let mut o = org();
    let edit = |o: &mut Org, id: RoleId, grants: Grants| {
        let mut r = o.graph.role(id).expect("role").clone();
        r.grants = grants;
        r.version += 1;
        o.graph.put_role(r);
    };
    let (supervisor_id, manager_id) = (o.supervisor, o.manager);
    let supervisor = Builtin::Supervisor.default_grants();
    edit(
        &mut o,
        supervisor_id,
        Grants {
            view_mailbox_list: Scope::Own,
            ..supervisor
        },
    );
    assert!(
        !o.graph
            .check(o.ceo, Permission::MailboxView, Some(o.inside))
            .unwrap(),
        "supervisors lose the list"
    );
    assert!(o
        .graph
        .lookup_mailboxes(o.east_head, Permission::MailboxView)
        .is_empty());
    o.graph.refresh();
    edit(
        &mut o,
        supervisor_id,
        Grants {
            modify_mailboxes: Scope::Subordinates,
            ..supervisor
        },
    );
    assert_rows(
        &o,
        &[("direct head", o.east_head, "vms---", "------", "---")],
    );
    let manager = Builtin::Manager.default_grants();
    edit(
        &mut o,
        manager_id,
        Grants {
            view_mailbox_list: Scope::All,
            modify_mailboxes: Scope::None,
            ..manager
        },
    );
    assert_rows(
        &o,
        &[
            (
                "Manager who may list everything",
                o.peer,
                "v-----",
                "v-----",
                "---",
            ),
            (
                "owner who may change nothing",
                o.owner,
                "v--cgr",
                "v-----",
                "---",
            ),
        ],
    );
}

#[test]
fn an_explanation_walks_from_the_mailbox_to_the_supervisor_and_names_the_role() {
    let o = org();
    let why = o
        .graph
        .explain(o.ceo, Permission::MailboxView, Some(o.inside))
        .unwrap()
        .expect("the CEO may view it");
    for r in [
        Owner(o.inside, o.owner),
        Member(o.owner, o.east),
        Parent(o.east, o.sales),
        Parent(o.sales, o.company),
        Head(o.company, o.ceo),
    ] {
        assert!(why.path.contains(&r), "{r:?} in {:?}", why.path);
    }
    let granted = why.granted_by.expect("a role granted it");
    assert_eq!(granted.role, o.supervisor);
    assert_eq!(granted.scope, Scope::Subordinates);
    assert_eq!(
        granted.assignment,
        Relationship::Assignee(o.supervisor, Assignee::Heads)
    );
    let why = o
        .graph
        .explain(o.reader, Permission::MailboxReadMail, Some(o.inside))
        .unwrap()
        .expect("granted");
    assert_eq!(why.path, vec![Reader(o.inside, o.reader)]);
    assert_eq!(why.granted_by, None);
    for user in [o.admin, o.everything] {
        assert!(o
            .graph
            .explain(user, Permission::MailboxReadMail, Some(o.inside))
            .unwrap()
            .is_none());
    }
    let why = o
        .graph
        .explain(o.admin, Permission::MailboxModify, Some(o.outside))
        .unwrap()
        .expect("the admin may change it");
    let granted = why.granted_by.expect("Administrator");
    assert_eq!(granted.role, o.administrator);
    assert_eq!(granted.assignment, Admin(o.admin));
}
