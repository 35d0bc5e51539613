//! The whole matrix of the access issue: every role × every permission, on a mailbox inside the
//! roles' subtree and on one outside it, each cell asserted.

use mailroom_access::model::Relationship::*;
use mailroom_access::OrgGraph;
use mailroom_types::{DepartmentId, MailboxId, Permission, UserId};
use uuid::Uuid;

struct Org {
    graph: OrgGraph,
    company: DepartmentId,
    sales: DepartmentId,
    east: DepartmentId,
    other: DepartmentId,
    admin: UserId,
    manager: UserId,
    ceo: UserId,
    east_head: UserId,
    owner: UserId,
    reader: UserId,
    peer: UserId,
    dismissed: UserId,
    other_head: UserId,
    outsider: UserId,
    inside: MailboxId,
    outside: MailboxId,
}

/// A fresh id of whichever kind the place wants.
fn id<Id: From<Uuid>>() -> Id {
    Uuid::new_v4().into()
}

/// Company → Sales → East; Other at the top. The owner works in East and owns `inside`; the
/// outsider works in Other and owns `outside`. The CEO heads Company (two levels above East).
fn org() -> Org {
    let mut o = Org {
        graph: OrgGraph::new(),
        company: id(),
        sales: id(),
        east: id(),
        other: id(),
        admin: id(),
        manager: id(),
        ceo: id(),
        east_head: id(),
        owner: id(),
        reader: id(),
        peer: id(),
        dismissed: id(),
        other_head: id(),
        outsider: id(),
        inside: id(),
        outside: id(),
    };
    for u in [
        o.admin,
        o.manager,
        o.ceo,
        o.east_head,
        o.owner,
        o.reader,
        o.peer,
        o.dismissed,
        o.other_head,
        o.outsider,
    ] {
        o.graph.set_user(u, true);
    }
    let rels = [
        Parent(o.sales, o.company),
        Parent(o.east, o.sales),
        Admin(o.admin),
        MailboxManager(o.manager),
        Head(o.company, o.ceo),
        Head(o.east, o.east_head),
        Head(o.other, o.other_head),
        Member(o.admin, o.company),
        Member(o.manager, o.company),
        Member(o.ceo, o.company),
        Member(o.east_head, o.east),
        Member(o.owner, o.east),
        Member(o.peer, o.east),
        Member(o.reader, o.other),
        Member(o.outsider, o.other),
        // The dismissed user was an admin and headed Sales: none of it counts any more.
        Admin(o.dismissed),
        Head(o.sales, o.dismissed),
        Owner(o.inside, o.owner),
        Owner(o.outside, o.outsider),
        Reader(o.inside, o.reader),
    ];
    for r in rels {
        o.graph.write(r).expect("valid relationship");
    }
    o.graph.set_user(o.dismissed, false);
    o
}

const PERMS: [Permission; 5] = [
    Permission::MailboxView,
    Permission::MailboxModify,
    Permission::MailboxReadMail,
    Permission::MailboxSync,
    Permission::OrgInvite,
];

fn row(graph: &OrgGraph, user: UserId, mailbox: MailboxId) -> [bool; 5] {
    PERMS.map(|p| graph.check(user, p, Some(mailbox)).expect("check"))
}

#[test]
fn every_role_and_permission_on_mailboxes_inside_and_outside_the_subtree() {
    let o = org();
    let stranger: UserId = id(); // a user of another organisation: unknown to this graph
                                 //                 view   modify read   sync   invite
    let cases: [(&str, UserId, [bool; 5], [bool; 5]); 10] = [
        (
            "org admin",
            o.admin,
            [true, true, false, true, true],
            [true, true, false, true, true],
        ),
        (
            "mailbox manager",
            o.manager,
            [true, true, false, true, false],
            [true, true, false, true, false],
        ),
        (
            "supervisor two levels up",
            o.ceo,
            [true, false, false, false, false],
            [false; 5],
        ),
        (
            "direct head",
            o.east_head,
            [true, false, false, false, false],
            [false; 5],
        ),
        (
            "owner",
            o.owner,
            [true, true, true, true, false],
            [false; 5],
        ),
        (
            "reader",
            o.reader,
            [false, false, true, false, false],
            [false; 5],
        ),
        ("peer employee", o.peer, [false; 5], [false; 5]),
        (
            "dismissed user (was admin and head)",
            o.dismissed,
            [false; 5],
            [false; 5],
        ),
        (
            "head of another subtree",
            o.other_head,
            [false; 5],
            [true, false, false, false, false],
        ),
        (
            "user of another organisation",
            stranger,
            [false; 5],
            [false; 5],
        ),
    ];
    for (role, user, inside, outside) in cases {
        assert_eq!(
            row(&o.graph, user, o.inside),
            inside,
            "{role} on the mailbox inside the subtree"
        );
        assert_eq!(
            row(&o.graph, user, o.outside),
            outside,
            "{role} on the mailbox outside the subtree"
        );
    }
}

#[test]
fn admins_and_supervisors_read_mail_only_with_a_grant() {
    let mut o = org();
    for user in [o.admin, o.ceo, o.east_head] {
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
fn inviting_follows_the_organisation_setting() {
    let mut o = org();
    assert!(!o.graph.check(o.peer, Permission::OrgInvite, None).unwrap());
    o.graph.write(Inviter(o.peer)).unwrap();
    assert!(o.graph.check(o.peer, Permission::OrgInvite, None).unwrap());
    o.graph.write(EveryoneInvites).unwrap();
    assert!(o.graph.check(o.owner, Permission::OrgInvite, None).unwrap());
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
    assert!(!o
        .graph
        .check(o.owner, Permission::OrgRegisterUsers, None)
        .unwrap());
    assert!(o
        .graph
        .check(o.admin, Permission::OrgManagePermissions, None)
        .unwrap());
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
        "access by: owner and reader, not admin or supervisors"
    );
}

#[test]
fn the_organisation_settings_widen_and_narrow_each_audience() {
    use mailroom_access::{Audience, Settings};
    let mut o = org();
    let defaults = Settings::default();
    o.graph.set_settings(Settings {
        view_mailbox_list: Audience::AdminsAndManagers,
        ..defaults
    });
    assert!(
        !o.graph
            .check(o.ceo, Permission::MailboxView, Some(o.inside))
            .unwrap(),
        "supervisors lose the list"
    );
    assert!(o
        .graph
        .check(o.manager, Permission::MailboxView, Some(o.inside))
        .unwrap());
    assert!(o
        .graph
        .lookup_mailboxes(o.east_head, Permission::MailboxView)
        .is_empty());
    o.graph.set_settings(Settings {
        modify_mailboxes: Audience::AdminsManagersAndSupervisors,
        ..defaults
    });
    assert!(o
        .graph
        .check(o.east_head, Permission::MailboxModify, Some(o.inside))
        .unwrap());
    assert!(!o
        .graph
        .check(o.east_head, Permission::MailboxModify, Some(o.outside))
        .unwrap());
    o.graph.set_settings(Settings {
        modify_mailboxes: Audience::Admins,
        ..defaults
    });
    assert!(!o
        .graph
        .check(o.manager, Permission::MailboxModify, Some(o.inside))
        .unwrap());
    o.graph.set_settings(Settings {
        view_mailbox_list: Audience::Everyone,
        invite: Audience::AdminsManagersAndSupervisors,
        ..defaults
    });
    assert!(o
        .graph
        .check(o.peer, Permission::MailboxView, Some(o.outside))
        .unwrap());
    assert!(
        !o.graph
            .check(o.peer, Permission::MailboxReadMail, Some(o.outside))
            .unwrap(),
        "reading mail is never an audience"
    );
    assert!(o
        .graph
        .check(o.east_head, Permission::OrgInvite, None)
        .unwrap());
    assert!(!o.graph.check(o.peer, Permission::OrgInvite, None).unwrap());
}

#[test]
fn an_explanation_walks_from_the_mailbox_to_the_supervisor() {
    let o = org();
    let why = o
        .graph
        .explain(o.ceo, Permission::MailboxView, Some(o.inside))
        .unwrap()
        .expect("the CEO may view it");
    assert_eq!(
        why.path,
        vec![
            Owner(o.inside, o.owner),
            Member(o.owner, o.east),
            Parent(o.east, o.sales),
            Parent(o.sales, o.company),
            Head(o.company, o.ceo),
        ]
    );
    assert_eq!(why.reason, "supervises the owner");
    let why = o
        .graph
        .explain(o.reader, Permission::MailboxReadMail, Some(o.inside))
        .unwrap()
        .expect("granted");
    assert_eq!(why.path, vec![Reader(o.inside, o.reader)]);
    assert!(o
        .graph
        .explain(o.admin, Permission::MailboxReadMail, Some(o.inside))
        .unwrap()
        .is_none());
}
