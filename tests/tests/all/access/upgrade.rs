//! The upgrade to roles against real PostgreSQL: a database at access's migration 1001 holding
//! organisations with every combination of the old audiences, mailbox managers, inviters,
//! heads, members, dismissals and mailboxes is migrated by `1002_roles.sql`; a replica loaded
//! from it then answers every user × permission × mailbox exactly as the audiences did (the
//! old rules are written out below as the oracle), and each organisation has the roles
//! `legacy::roles_for` describes (the legacy rows stay, for the older build after a rollback).
//! Then the store's side of roles on a fresh database: an organisation written to gets its
//! three default roles exactly once, one an older pod wrote to gets them from the startup
//! backfill, the writer's role changes refuse what they must and reach a replica, and a role
//! with thousands of assignments is deleted in one statement into an event of bounded size.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mailroom_access::error::AccessError;
use mailroom_access::legacy::{
    self, Audience, ReadAccessGrants, Settings, INVITERS_ROLE, MAILBOX_MANAGERS_ROLE,
};
use mailroom_access::model::{Assignee, Builtin, Grants, RoleDef, Scope};
use mailroom_access::replica::{Replica, Tailing};
use mailroom_access::store::{self, changelog, Change, Writer};
use mailroom_access::Relationship;
use mailroom_platform::types::{DepartmentId, MailboxId, OrgId, Permission, RoleId, UserId};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use uuid::Uuid;

/// A database of its own, migrated through access's version `through` (everything when
/// `None`).
async fn database(through: Option<i64>) -> PgPool {
    let url = mailroom_tests::create_database(&mailroom_tests::StackEnv::load().database_url).await;
    let pool = mailroom_platform::db::connect(
        &secrecy::SecretString::from(url),
        mailroom_access::SCHEMA,
        4,
    )
    .await
    .expect("access pool");
    migrate(&pool, through).await;
    pool
}

async fn migrate(pool: &PgPool, through: Option<i64>) {
    let migrations: Vec<_> = mailroom_access::MIGRATIONS
        .iter()
        .filter(|m| through.is_none_or(|t| m.version <= t))
        .cloned()
        .collect();
    let migrator = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    mailroom_platform::db::migrate(pool, mailroom_access::SCHEMA, &migrator)
        .await
        .expect("migrate");
}

async fn replica(pool: &PgPool) -> Replica {
    Replica::load(
        pool.clone(),
        Duration::from_secs(5),
        Duration::from_secs(3600),
        Tailing {
            poll: Duration::from_secs(3600),
            notifications: false,
        },
    )
    .await
    .expect("replica loads")
}

const AUDIENCES: [Audience; 4] = [
    Audience::Admins,
    Audience::AdminsAndManagers,
    Audience::AdminsManagersAndSupervisors,
    Audience::Everyone,
];

fn audience_text(a: Audience) -> &'static str {
    match a {
        Audience::Admins => "admins",
        Audience::AdminsAndManagers => "admins_and_managers",
        Audience::AdminsManagersAndSupervisors => "admins_managers_and_supervisors",
        Audience::Everyone => "everyone",
    }
}

/// One organisation as it was before roles, and the old rules over it (the oracle).
struct LegacyOrg {
    org: OrgId,
    /// The settings row's texts, if it had one.
    texts: Option<[&'static str; 4]>,
    /// What those texts meant (the defaults without a row; any unknown audience text was
    /// "admins, managers and supervisors").
    settings: Settings,
    users: Vec<UserId>,
    active: HashSet<UserId>,
    admins: HashSet<UserId>,
    managers: HashSet<UserId>,
    inviters: HashSet<UserId>,
    heads: HashMap<DepartmentId, UserId>,
    parent: HashMap<DepartmentId, DepartmentId>,
    member_of: HashMap<UserId, DepartmentId>,
    owner: HashMap<MailboxId, UserId>,
    readers: HashSet<(MailboxId, UserId)>,
}

fn parse_audience(s: &str) -> Audience {
    match s {
        "admins" => Audience::Admins,
        "admins_and_managers" => Audience::AdminsAndManagers,
        "everyone" => Audience::Everyone,
        _ => Audience::AdminsManagersAndSupervisors,
    }
}

impl LegacyOrg {
    /// Company → Sales → East, Other → Night: a head for each but Night, members, a user with
    /// no department, a dismissed one, an admin; mailbox managers and inviters among them
    /// (a head, a plain member, a dismissed user, the admin) when `has_mm`/`has_inv`.
    fn new(texts: Option<[&'static str; 4]>, has_mm: bool, has_inv: bool) -> LegacyOrg {
        let settings = match texts {
            None => Settings::default(),
            Some([view, modify, invite, grants]) => Settings {
                view_mailbox_list: parse_audience(view),
                modify_mailboxes: parse_audience(modify),
                invite: parse_audience(invite),
                read_access_grants: if grants == "admins" {
                    ReadAccessGrants::Admins
                } else {
                    ReadAccessGrants::AdminsAndOwners
                },
            },
        };
        let mut o = LegacyOrg {
            org: OrgId::new(),
            texts,
            settings,
            users: Vec::new(),
            active: HashSet::new(),
            admins: HashSet::new(),
            managers: HashSet::new(),
            inviters: HashSet::new(),
            heads: HashMap::new(),
            parent: HashMap::new(),
            member_of: HashMap::new(),
            owner: HashMap::new(),
            readers: HashSet::new(),
        };
        let [company, sales, east, other, night] = [(); 5].map(|_| DepartmentId::new());
        o.parent.insert(sales, company);
        o.parent.insert(east, sales);
        o.parent.insert(night, other);
        let user = |o: &mut LegacyOrg, department: Option<DepartmentId>, owns: bool| {
            let u = UserId::new();
            o.users.push(u);
            o.active.insert(u);
            if let Some(d) = department {
                o.member_of.insert(u, d);
            }
            if owns {
                o.owner.insert(MailboxId::new(), u);
            }
            u
        };
        let admin = user(&mut o, Some(company), true);
        o.admins.insert(admin);
        let ceo = user(&mut o, Some(company), false);
        let sales_head = user(&mut o, Some(sales), true);
        let east_head = user(&mut o, Some(east), true);
        let e1 = user(&mut o, Some(east), true);
        let e2 = user(&mut o, Some(east), true);
        let other_head = user(&mut o, Some(other), true);
        let o1 = user(&mut o, Some(other), true);
        let n1 = user(&mut o, Some(night), true);
        user(&mut o, None, true); // in no department
        let gone = user(&mut o, Some(east), true);
        o.active.remove(&gone);
        o.heads.insert(company, ceo);
        o.heads.insert(sales, sales_head);
        o.heads.insert(east, east_head);
        o.heads.insert(other, other_head);
        let e1_mailbox = o.mailbox_of(e1);
        o.readers.insert((e1_mailbox, e2));
        o.readers.insert((e1_mailbox, other_head));
        if has_mm {
            o.managers.extend([other_head, o1, gone, admin]);
        }
        if has_inv {
            o.inviters.extend([east_head, n1, admin]);
        }
        o
    }

    fn mailbox_of(&self, user: UserId) -> MailboxId {
        self.owner
            .iter()
            .find_map(|(m, u)| (*u == user).then_some(*m))
            .expect("owns a mailbox")
    }

    fn ancestors_or_self(&self, d: DepartmentId) -> Vec<DepartmentId> {
        std::iter::successors(Some(d), |d| self.parent.get(d).copied()).collect()
    }

    /// The old `supervises`: heads the user's department or one above it, or a department
    /// above one the user heads.
    fn supervises(&self, boss: UserId, user: UserId) -> bool {
        if boss == user || !self.active.contains(&boss) {
            return false;
        }
        let bossed: HashSet<DepartmentId> = self
            .heads
            .iter()
            .filter_map(|(d, h)| (*h == boss).then_some(*d))
            .collect();
        let mut above: Vec<DepartmentId> = self
            .member_of
            .get(&user)
            .map(|d| self.ancestors_or_self(*d))
            .unwrap_or_default();
        for (d, h) in &self.heads {
            if *h == user {
                above.extend(self.ancestors_or_self(*d).into_iter().skip(1));
            }
        }
        above.iter().any(|d| bossed.contains(d))
    }

    fn heads_any(&self, user: UserId) -> bool {
        self.heads.values().any(|h| *h == user)
    }

    /// The old `in_audience`.
    fn in_audience(&self, user: UserId, audience: Audience, owner: Option<UserId>) -> bool {
        self.admins.contains(&user)
            || (audience >= Audience::AdminsAndManagers && self.managers.contains(&user))
            || (audience == Audience::AdminsManagersAndSupervisors
                && match owner {
                    Some(o) => self.supervises(user, o),
                    None => self.heads_any(user),
                })
            || audience == Audience::Everyone
    }

    /// What the audiences answered. Connecting for someone was changing mailboxes; granting
    /// read access was for admins, and owners of their own mailbox when the settings allowed.
    fn check(&self, user: UserId, p: Permission, mailbox: Option<MailboxId>) -> bool {
        if !self.active.contains(&user) {
            return false;
        }
        let s = &self.settings;
        let owner = mailbox.and_then(|m| self.owner.get(&m).copied());
        let is_owner = owner == Some(user);
        let admin = self.admins.contains(&user);
        match p {
            Permission::MailboxView => {
                owner.is_some()
                    && (is_owner
                        || self.in_audience(user, s.modify_mailboxes, owner)
                        || self.in_audience(user, s.view_mailbox_list, owner))
            }
            Permission::MailboxModify | Permission::MailboxSync | Permission::MailboxConnect => {
                owner.is_some() && (is_owner || self.in_audience(user, s.modify_mailboxes, owner))
            }
            Permission::MailboxGrantRead => {
                owner.is_some()
                    && (admin
                        || (is_owner && s.read_access_grants == ReadAccessGrants::AdminsAndOwners))
            }
            Permission::MailboxReadMail => {
                is_owner || mailbox.is_some_and(|m| self.readers.contains(&(m, user)))
            }
            Permission::OrgInvite => {
                self.inviters.contains(&user) || self.in_audience(user, s.invite, None)
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => admin,
        }
    }
}

/// Rows for `UNNEST` inserts.
#[derive(Default)]
struct Rows {
    users: (Vec<Uuid>, Vec<Uuid>, Vec<bool>),
    rels: (Vec<Uuid>, Vec<String>, Vec<Uuid>, Vec<Uuid>),
    mailboxes: (Vec<Uuid>, Vec<Uuid>),
    settings: Vec<(Uuid, [&'static str; 4])>,
}

impl Rows {
    fn rel(&mut self, org: OrgId, kind: &str, object: Uuid, subject: Uuid) {
        self.rels.0.push(org.into_uuid());
        self.rels.1.push(kind.into());
        self.rels.2.push(object);
        self.rels.3.push(subject);
    }

    fn add(&mut self, o: &LegacyOrg) {
        let org = o.org;
        for u in &o.users {
            self.users.0.push(u.into_uuid());
            self.users.1.push(org.into_uuid());
            self.users.2.push(o.active.contains(u));
        }
        for u in &o.admins {
            self.rel(org, "admin", org.into_uuid(), u.into_uuid());
        }
        for u in &o.managers {
            self.rel(org, "mailbox_manager", org.into_uuid(), u.into_uuid());
        }
        for u in &o.inviters {
            self.rel(org, "inviter", org.into_uuid(), u.into_uuid());
        }
        for (d, u) in &o.heads {
            self.rel(org, "head", d.into_uuid(), u.into_uuid());
        }
        for (c, p) in &o.parent {
            self.rel(org, "parent", c.into_uuid(), p.into_uuid());
        }
        for (u, d) in &o.member_of {
            self.rel(org, "member", u.into_uuid(), d.into_uuid());
        }
        for (m, u) in &o.owner {
            self.rel(org, "owner", m.into_uuid(), u.into_uuid());
            self.mailboxes.0.push(m.into_uuid());
            self.mailboxes.1.push(org.into_uuid());
        }
        for (m, u) in &o.readers {
            self.rel(org, "reader", m.into_uuid(), u.into_uuid());
        }
        if let Some(texts) = o.texts {
            self.settings.push((org.into_uuid(), texts));
        }
    }

    async fn insert(self, pool: &PgPool) {
        let mut tx = pool.begin().await.expect("tx");
        sqlx::query(
            "INSERT INTO users (user_id, org_id, active) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bool[])",
        )
        .bind(&self.users.0)
        .bind(&self.users.1)
        .bind(&self.users.2)
        .execute(&mut *tx)
        .await
        .expect("users");
        sqlx::query(
            "INSERT INTO relationships (org_id, kind, object_id, subject_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[])",
        )
        .bind(&self.rels.0)
        .bind(&self.rels.1)
        .bind(&self.rels.2)
        .bind(&self.rels.3)
        .execute(&mut *tx)
        .await
        .expect("relationships");
        sqlx::query(
            "INSERT INTO mailboxes (mailbox_id, org_id) SELECT * FROM UNNEST($1::uuid[], $2::uuid[])",
        )
        .bind(&self.mailboxes.0)
        .bind(&self.mailboxes.1)
        .execute(&mut *tx)
        .await
        .expect("mailboxes");
        for (org, [view, modify, invite, grants]) in self.settings {
            sqlx::query(
                "INSERT INTO settings (org_id, view_mailbox_list, modify_mailboxes, invite, read_access_grants) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org)
            .bind(view)
            .bind(modify)
            .bind(invite)
            .bind(grants)
            .execute(&mut *tx)
            .await
            .expect("settings");
        }
        tx.commit().await.expect("commit");
    }
}

const PERMISSIONS: [Permission; 6] = [
    Permission::MailboxView,
    Permission::MailboxModify,
    Permission::MailboxSync,
    Permission::MailboxConnect,
    Permission::MailboxGrantRead,
    Permission::MailboxReadMail,
];
const ORG_PERMISSIONS: [Permission; 3] = [
    Permission::OrgInvite,
    Permission::OrgManagePermissions,
    Permission::OrgRegisterUsers,
];

#[tokio::test]
async fn the_upgrade_turns_every_organisations_audiences_into_roles_that_answer_as_before() {
    let pool = database(Some(1001)).await;

    // Every combination of the four settings, each with and without mailbox managers and
    // inviters; organisations with no settings row (the defaults); audience texts the old
    // code did not know (read as "admins, managers and supervisors").
    let mut orgs = Vec::new();
    for view in AUDIENCES {
        for modify in AUDIENCES {
            for invite in AUDIENCES {
                for grants in ["admins", "admins_and_owners"] {
                    for (has_mm, has_inv) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        let texts = [
                            audience_text(view),
                            audience_text(modify),
                            audience_text(invite),
                            grants,
                        ];
                        orgs.push(LegacyOrg::new(Some(texts), has_mm, has_inv));
                    }
                }
            }
        }
    }
    for (has_mm, has_inv) in [(false, false), (true, true)] {
        orgs.push(LegacyOrg::new(None, has_mm, has_inv));
        orgs.push(LegacyOrg::new(
            Some(["supervisors?", "unknown", "heads", "owners"]),
            has_mm,
            has_inv,
        ));
    }
    let mut rows = Rows::default();
    for o in &orgs {
        rows.add(o);
    }
    rows.insert(&pool).await;
    // An organisation that only ever had its settings stored (everyone invites), and one
    // that access heard of only through identity's invite flag.
    let (settings_only, flag_only) = (OrgId::new(), OrgId::new());
    sqlx::query(
        "INSERT INTO settings (org_id, view_mailbox_list, modify_mailboxes, invite, read_access_grants) \
         VALUES ($1, 'admins', 'admins', 'everyone', 'admins')",
    )
    .bind(settings_only)
    .execute(&pool)
    .await
    .expect("settings only");
    sqlx::query("INSERT INTO identity_invite_flags (org_id, everyone) VALUES ($1, false)")
        .bind(flag_only)
        .execute(&pool)
        .await
        .expect("flag only");

    migrate(&pool, None).await;

    let mut conn = pool.acquire().await.expect("conn");
    let (leftover,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM relationships WHERE kind IN ('mailbox_manager', 'inviter')",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("count");
    assert_eq!(
        leftover as usize,
        orgs.iter()
            .map(|o| o.managers.len() + o.inviters.len())
            .sum::<usize>(),
        "the legacy mailbox manager and inviter rows stay, for the older build after a rollback"
    );
    // A build that knows only the migrations through 1001 (after a rollback, a later release's
    // to this one's) still starts against the migrated schema.
    migrate(&pool, Some(1001)).await;
    let (kept,): (i64,) = sqlx::query_as("SELECT count(*) FROM settings")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(
        kept as usize,
        orgs.iter().filter(|o| o.texts.is_some()).count() + 1,
        "settings stay for a rollback"
    );

    // The roles are exactly those `legacy::roles_for` describes, assigned as it says.
    for o in &orgs {
        let stored = store::org_roles(&mut conn, o.org).await.expect("roles");
        let expected =
            legacy::roles_for(o.settings, !o.managers.is_empty(), !o.inviters.is_empty());
        let shape = |r: &RoleDef| (r.builtin, r.name.clone(), r.grants, r.hidden, r.version);
        let mut got: Vec<_> = stored.iter().map(|r| shape(&r.def)).collect();
        let mut want: Vec<_> = expected.iter().map(|(r, _)| shape(r)).collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        want.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(got, want, "{:?}", o.texts);
        for r in &stored {
            let assigned: HashSet<Relationship> =
                store::role_assignments(&mut conn, o.org, r.def.id)
                    .await
                    .expect("assignments")
                    .into_iter()
                    .collect();
            let who: HashSet<Assignee> = match (r.def.builtin, r.def.name.as_str()) {
                (Some(Builtin::Supervisor), _) => [Assignee::Heads].into(),
                (Some(Builtin::Manager), _) => [Assignee::EveryoneElse].into(),
                (Some(Builtin::Administrator), _) => HashSet::new(),
                (None, MAILBOX_MANAGERS_ROLE) => {
                    o.managers.iter().map(|u| Assignee::User(*u)).collect()
                }
                (None, INVITERS_ROLE) => o.inviters.iter().map(|u| Assignee::User(*u)).collect(),
                other => panic!("unexpected role {other:?}"),
            };
            let want: HashSet<Relationship> = who
                .into_iter()
                .map(|a| Relationship::Assignee(r.def.id, a))
                .collect();
            assert_eq!(assigned, want, "{} in {:?}", r.def.name, o.texts);
            if r.def.builtin == Some(Builtin::Administrator) {
                let active_admins = o.admins.iter().filter(|u| o.active.contains(u)).count();
                assert_eq!(r.assignment_count as usize, active_admins);
            } else {
                assert_eq!(r.assignment_count as usize, assigned.len());
            }
        }
    }
    for (org, invites) in [(settings_only, true), (flag_only, false)] {
        let roles = store::org_roles(&mut conn, org).await.expect("roles");
        assert_eq!(
            roles.len(),
            3,
            "an organisation with no users still has the defaults"
        );
        let rows = store::relationship_page(
            &mut conn,
            org,
            &[store::Kind::EveryoneInvites],
            None,
            None,
            None,
            10,
        )
        .await
        .expect("rows");
        assert_eq!(!rows.is_empty(), invites);
    }
    drop(conn);

    // A replica loaded from the migrated tables answers as the audiences did, for everyone
    // (and a stranger), every mailbox permission on every mailbox, and the org permissions.
    let replica = replica(&pool).await;
    let state = replica.read();
    let mut checked = 0usize;
    for o in &orgs {
        let graph = state.org(o.org).expect("the organisation is loaded");
        let everyone_invites = o.settings.invite == Audience::Everyone;
        assert_eq!(graph.everyone_invites(), everyone_invites, "{:?}", o.texts);
        let mut people = o.users.clone();
        people.push(UserId::new());
        let mut mailboxes: Vec<MailboxId> = o.owner.keys().copied().collect();
        mailboxes.push(MailboxId::new());
        for &u in &people {
            for p in ORG_PERMISSIONS {
                let got = graph.check(u, p, None).expect("check");
                assert_eq!(
                    got,
                    o.check(u, p, None),
                    "{} for user {u} in an org with {:?}, managers {}, inviters {}",
                    p.name(),
                    o.texts,
                    !o.managers.is_empty(),
                    !o.inviters.is_empty()
                );
                checked += 1;
            }
            for &m in &mailboxes {
                for p in PERMISSIONS {
                    let got = graph.check(u, p, Some(m)).expect("check");
                    assert_eq!(
                        got,
                        o.check(u, p, Some(m)),
                        "{} for user {u} on {m} (owner {:?}) in an org with {:?}, managers {}, inviters {}",
                        p.name(),
                        o.owner.get(&m),
                        o.texts,
                        !o.managers.is_empty(),
                        !o.inviters.is_empty()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 300_000, "{checked} answers compared");
}

/// Writes one relationship to `org` through a writer and commits; the changes it published.
async fn write(pool: &PgPool, org: OrgId, rel: Relationship) -> Vec<Change> {
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    w.write(rel).await.expect("write");
    let published = w.changes().to_vec();
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    published
}

#[tokio::test]
async fn an_organisation_written_to_gets_its_three_default_roles_once() {
    let pool = database(None).await;
    let org = OrgId::new();
    let (user, other) = (UserId::new(), UserId::new());
    let published = write(&pool, org, Relationship::Admin(user)).await;
    assert_eq!(
        published,
        vec![Change::Write(store::Row::of(
            org,
            Relationship::Admin(user)
        ))],
        "the default roles are recorded, not published"
    );
    write(&pool, org, Relationship::Admin(other)).await;
    write(&pool, org, Relationship::EveryoneInvites).await;

    let mut conn = pool.acquire().await.expect("conn");
    let roles = store::org_roles(&mut conn, org).await.expect("roles");
    let kinds: Vec<_> = roles
        .iter()
        .map(|r| (r.def.builtin, r.def.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Some(Builtin::Administrator), "Administrator"),
            (Some(Builtin::Supervisor), "Supervisor"),
            (Some(Builtin::Manager), "Manager"),
        ]
    );
    for r in &roles {
        let builtin = r.def.builtin.expect("built in");
        assert_eq!(r.def.grants, builtin.default_grants());
        assert_eq!(r.def.version, 1);
        let assigned = store::role_assignments(&mut conn, org, r.def.id)
            .await
            .expect("assignments");
        let want = match builtin {
            Builtin::Administrator => vec![],
            Builtin::Supervisor => vec![Relationship::Assignee(r.def.id, Assignee::Heads)],
            Builtin::Manager => vec![Relationship::Assignee(r.def.id, Assignee::EveryoneElse)],
        };
        assert_eq!(assigned, want, "{}", r.def.name);
    }
    assert_eq!(
        roles[0].assignment_count, 0,
        "no admin is a known active user yet"
    );

    // Recorded once, in the first write's revision, and seen by a replica.
    let records = changelog::records_after(&mut conn, 0, 100)
        .await
        .expect("records");
    assert_eq!(records.len(), 3);
    let created: Vec<_> = records
        .iter()
        .flat_map(|(_, _, changes)| changelog::decode(changes.clone()).expect("decodes"))
        .filter(|c| matches!(c, Change::RoleCreated { .. }))
        .collect();
    assert_eq!(created.len(), 3);
    drop(conn);
    let replica = replica(&pool).await;
    let state = replica.read();
    let graph = state.org(org).expect("loaded");
    assert_eq!(graph.roles().count(), 3);
    assert!(graph.everyone_invites());
    let manager = graph.builtin_role(Builtin::Manager).expect("manager");
    assert_eq!(
        graph.assignees(manager.id).collect::<Vec<_>>(),
        vec![Assignee::EveryoneElse]
    );
}

fn custom(name: &str, grants: Grants) -> RoleDef {
    RoleDef {
        id: RoleId::new(),
        builtin: None,
        name: name.into(),
        hidden: false,
        grants,
        version: 1,
    }
}

#[tokio::test]
async fn role_changes_are_checked_in_the_store_and_reach_a_tailing_replica() {
    let pool = database(None).await;
    let org = OrgId::new();
    let (hanna, east) = (UserId::new(), DepartmentId::new());
    write(&pool, org, Relationship::Member(hanna, east)).await;
    let replica = replica(&pool).await;

    let heads = Grants {
        view_mailbox_list: Scope::Department,
        connect_mailboxes: Scope::Department,
        modify_mailboxes: Scope::Department,
        grant_read_access: Scope::Own,
        ..Grants::NONE
    };
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let made = w
        .create_role(&custom("Department heads", heads), None)
        .await
        .expect("create");
    w.write(Relationship::Assignee(made.id, Assignee::User(hanna)))
        .await
        .expect("assign");
    w.write(Relationship::Assignee(made.id, Assignee::Tree(east)))
        .await
        .expect("assign");
    let no_mail = w
        .create_role(&custom("No mail", Grants::NONE), None)
        .await
        .expect("create");
    w.write(Relationship::Assignee(no_mail.id, Assignee::Members(east)))
        .await
        .expect("assign");
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");

    // Names are unique whatever their case; the refusal names the role that has it.
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let taken = w
        .create_role(&custom("department HEADS", Grants::NONE), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, AccessError::AlreadyExists(m) if m.contains("Department heads")),
        "{taken:?}"
    );
    let renamed = RoleDef {
        name: "manager".into(),
        ..made.clone()
    };
    let taken = w
        .update_role(&renamed, Some(1), vec!["display_name".into()])
        .await
        .unwrap_err();
    assert!(matches!(taken, AccessError::AlreadyExists(_)), "{taken:?}");
    // Only the organisation's own roles are assigned, and never Administrator.
    let administrator = store::org_roles(w.conn(), org).await.expect("roles")[0]
        .def
        .clone();
    assert_eq!(administrator.builtin, Some(Builtin::Administrator));
    let refused = w
        .write(Relationship::Assignee(
            administrator.id,
            Assignee::User(hanna),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AccessError::FailedPrecondition(_)),
        "{refused:?}"
    );
    let refused = w
        .write(Relationship::Assignee(RoleId::new(), Assignee::Heads))
        .await
        .unwrap_err();
    assert!(matches!(refused, AccessError::NotFound(_)), "{refused:?}");
    drop(w);
    drop(tx);

    // An update at the read version moves it on; one at an older version is refused.
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let wider = RoleDef {
        name: "Heads of departments".into(),
        grants: Grants {
            view_mailbox_list: Scope::All,
            ..heads
        },
        ..made.clone()
    };
    let updated = w
        .update_role(
            &wider,
            Some(1),
            vec![
                "display_name".into(),
                "permissions.view_mailbox_list".into(),
            ],
        )
        .await
        .expect("update");
    assert_eq!(updated.version, 2);
    let stale = w.update_role(&wider, Some(1), vec![]).await.unwrap_err();
    assert!(
        matches!(&stale, AccessError::Aborted(m) if m.contains("the role changed since you read it") && m.contains("read it again and retry")),
        "{stale:?}"
    );
    let stale = w.delete_role(made.id, Some(1)).await.unwrap_err();
    assert!(matches!(stale, AccessError::Aborted(_)), "{stale:?}");
    let built_ins: Vec<RoleDef> = store::org_roles(w.conn(), org)
        .await
        .expect("roles")
        .into_iter()
        .filter(|r| r.def.builtin.is_some())
        .map(|r| r.def)
        .collect();
    let admin_role = built_ins
        .iter()
        .find(|r| r.builtin == Some(Builtin::Administrator))
        .expect("admin");
    let refused = w
        .update_role(
            &RoleDef {
                grants: Grants::NONE,
                ..admin_role.clone()
            },
            None,
            vec![],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AccessError::FailedPrecondition(_)),
        "{refused:?}"
    );
    for r in &built_ins {
        let refused = w.delete_role(r.id, None).await.unwrap_err();
        assert!(
            matches!(refused, AccessError::FailedPrecondition(_)),
            "{}: {refused:?}",
            r.name
        );
    }
    let missing = w.delete_role(RoleId::new(), None).await.unwrap_err();
    assert!(matches!(missing, AccessError::NotFound(_)), "{missing:?}");
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");

    replica.catch_up().await.expect("catch up");
    {
        let state = replica.read();
        let graph = state.org(org).expect("org");
        let role = graph.role(made.id).expect("the replica has the role");
        assert_eq!(role.name, "Heads of departments");
        assert_eq!(role.grants.view_mailbox_list, Scope::All);
        assert_eq!(role.version, updated.version);
        let assigned: HashSet<Assignee> = graph.assignees(made.id).collect();
        assert_eq!(
            assigned,
            [Assignee::User(hanna), Assignee::Tree(east)].into()
        );
    }

    // Deleting East takes the roles assigned to it away; deleting the role, its assignments.
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    w.delete_department(east).await.expect("delete department");
    let published = w.changes().to_vec();
    for rel in [
        Relationship::Assignee(made.id, Assignee::Tree(east)),
        Relationship::Assignee(no_mail.id, Assignee::Members(east)),
        Relationship::Member(hanna, east),
    ] {
        assert!(
            published.contains(&Change::Delete(store::Row::of(org, rel))),
            "{rel:?}"
        );
    }
    let removed = w
        .delete_role(made.id, Some(updated.version))
        .await
        .expect("delete");
    assert_eq!(
        removed,
        vec![Relationship::Assignee(made.id, Assignee::User(hanna))]
    );
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    replica.catch_up().await.expect("catch up");
    let state = replica.read();
    let graph = state.org(org).expect("org");
    assert!(graph.role(made.id).is_none());
    assert_eq!(graph.assignees(made.id).count(), 0);
    assert_eq!(graph.assignees(no_mail.id).count(), 0);
    assert_eq!(graph.roles().count(), 4);
}

#[tokio::test]
async fn an_organisation_has_at_most_a_hundred_custom_roles() {
    let pool = database(None).await;
    let org = OrgId::new();
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    for i in 0..100 {
        w.create_role(&custom(&format!("Role {i}"), Grants::NONE), None)
            .await
            .expect("create");
    }
    let refused = w
        .create_role(&custom("One too many", Grants::NONE), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AccessError::FailedPrecondition(m) if m.contains("100")),
        "{refused:?}"
    );
    let roles = store::org_roles(w.conn(), org).await.expect("roles");
    assert_eq!(roles.len(), 103);
    assert_eq!(roles[3].def.name, "Role 0", "built-ins first, then by name");
}

#[tokio::test]
async fn the_startup_backfill_gives_an_organisation_an_older_pod_wrote_to_its_default_roles() {
    let pool = database(None).await;
    // `written` went through this build's writer; `old` was written by an older pod during
    // the rolling upgrade (rows only, no roles), as was `legacy` with a mailbox manager.
    let (written, old, legacy) = (OrgId::new(), OrgId::new(), OrgId::new());
    let (ada, bo, cy) = (UserId::new(), UserId::new(), UserId::new());
    write(&pool, written, Relationship::Admin(ada)).await;
    for (org, user) in [(old, bo), (legacy, cy)] {
        sqlx::query("INSERT INTO users (user_id, org_id, active) VALUES ($1, $2, true)")
            .bind(user)
            .bind(org)
            .execute(&pool)
            .await
            .expect("user");
    }
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) VALUES ($1, 'mailbox_manager', $1, $2)",
    )
    .bind(legacy)
    .bind(cy)
    .execute(&pool)
    .await
    .expect("legacy row");
    let bos_mailbox = MailboxId::new();
    sqlx::query("INSERT INTO mailboxes (mailbox_id, org_id) VALUES ($1, $2)")
        .bind(bos_mailbox)
        .bind(old)
        .execute(&pool)
        .await
        .expect("mailbox");
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) VALUES ($1, 'owner', $2, $3)",
    )
    .bind(old)
    .bind(bos_mailbox)
    .bind(bo)
    .execute(&pool)
    .await
    .expect("owner");
    let replica = replica(&pool).await;
    {
        let state = replica.read();
        let graph = state.org(old).expect("loaded");
        assert_eq!(graph.roles().count(), 0);
        assert!(
            !graph
                .check(bo, Permission::MailboxModify, Some(bos_mailbox))
                .expect("check"),
            "without roles an ordinary user holds nothing, not even on their own mailbox"
        );
        assert_eq!(
            state.org(legacy).expect("loaded").len(),
            0,
            "the legacy row is passed over"
        );
    }

    let given = store::backfill_default_roles(&pool)
        .await
        .expect("backfill");
    assert_eq!(given, 2, "the two organisations without roles");
    assert_eq!(
        store::backfill_default_roles(&pool)
            .await
            .expect("backfill again"),
        0,
        "once given, never again"
    );
    let mut conn = pool.acquire().await.expect("conn");
    for org in [written, old, legacy] {
        let roles = store::org_roles(&mut conn, org).await.expect("roles");
        let kinds: Vec<_> = roles.iter().map(|r| r.def.builtin).collect();
        assert_eq!(
            kinds,
            vec![
                Some(Builtin::Administrator),
                Some(Builtin::Supervisor),
                Some(Builtin::Manager)
            ],
            "{org}"
        );
    }
    drop(conn);

    // Recorded in the changelog: a replica loaded before the backfill catches up on it, and
    // the ordinary user of the older pod's organisation now holds Manager's grants.
    replica.catch_up().await.expect("catch up");
    let state = replica.read();
    let graph = state.org(old).expect("org");
    assert_eq!(graph.roles().count(), 3);
    let manager = graph.builtin_role(Builtin::Manager).expect("manager");
    assert_eq!(
        graph.assignees(manager.id).collect::<Vec<_>>(),
        vec![Assignee::EveryoneElse]
    );
    assert!(
        graph
            .check(bo, Permission::MailboxModify, Some(bos_mailbox))
            .expect("check"),
        "with Manager (everyone else) they change their own mailbox again"
    );
}

#[tokio::test]
async fn deleting_a_role_held_by_thousands_removes_them_at_once_and_its_event_stays_bounded() {
    let pool = database(None).await;
    let org = OrgId::new();
    write(&pool, org, Relationship::Admin(UserId::new())).await;
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let crowd = w
        .create_role(&custom("Everyone, one by one", Grants::NONE), None)
        .await
        .expect("create");
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    let users: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) \
         SELECT $1, 'assignee', $2, u FROM UNNEST($3::uuid[]) u",
    )
    .bind(org)
    .bind(crowd.id)
    .bind(&users)
    .execute(&pool)
    .await
    .expect("assignments");

    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let removed = w.delete_role(crowd.id, Some(1)).await.expect("delete");
    assert_eq!(removed.len(), 2_000);
    let changes = w.changes().to_vec();
    let revision = w.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, Change::Delete(row) if row.kind == store::Kind::Assignee))
            .count(),
        2_000,
        "each assignment is recorded for the replicas"
    );
    let mut conn = pool.acquire().await.expect("conn");
    assert!(store::role_assignments(&mut conn, org, crowd.id)
        .await
        .expect("assignments")
        .is_empty());
    drop(conn);

    use mailroom_platform::proto::events::v1::envelope::Payload;
    let payloads = mailroom_access::events::payloads(org, &changes, revision);
    let deleted: Vec<_> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::RoleDeleted(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].display_name, "Everyone, one by one");
    assert_eq!(
        deleted[0].removed_assignments.len(),
        1_000,
        "the list is capped"
    );
    assert_eq!(
        deleted[0].removed_assignment_count, 2_000,
        "the count is whole"
    );
    assert!(
        payloads
            .iter()
            .all(|p| !matches!(p, Payload::RoleUnassigned(_))),
        "no event per assignment"
    );
}
