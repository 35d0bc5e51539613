//! The access engine in process, at the access issue's scale: 100k users, 200k mailboxes, an
//! 8-level department tree, the organisation's default roles plus custom roles assigned to
//! departments. Measures `check` (mixed people and permissions, and people holding a
//! department's role), a supervisor's `lookup_mailboxes` over ~10k subordinates and a head's
//! under a Department-scope role, `lookup_users`, `refresh` after a role edit, the time to
//! build the graph (what a restart costs) and the memory it holds. No gRPC: this is the
//! ceiling the service adds its transport to. Run with `.ci/bench access-engine`.

use std::time::Instant;

use clap::Parser;
use mailroom_access::model::Relationship::*;
use mailroom_access::model::{Assignee, Grants, Relationship, RoleDef, Scope};
use mailroom_access::OrgGraph;
use mailroom_platform::types::{DepartmentId, MailboxId, Permission, RoleId, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Custom roles besides the three defaults, assigned round-robin to departments.
    #[arg(long, default_value_t = 20)]
    custom_roles: usize,
    /// Departments the custom roles are assigned to, half of them with their sub-departments.
    #[arg(long, default_value_t = 1000)]
    role_departments: usize,
}

/// A custom role's grants that give the answers of the default roles: the holder's own
/// mailboxes, and for viewing in every other role their subordinates' (which is what
/// Supervisor gives a head, and nothing more to anyone else). Holding one replaces Manager.
fn answer_preserving(i: usize) -> Grants {
    Grants {
        view_mailbox_list: if i.is_multiple_of(2) {
            Scope::Own
        } else {
            Scope::Subordinates
        },
        connect_mailboxes: Scope::Own,
        modify_mailboxes: Scope::Own,
        grant_read_access: Scope::Own,
        invite: false,
        manage_permissions: false,
    }
}

fn custom_role(name: String, grants: Grants) -> RoleDef {
    RoleDef {
        id: RoleId::new(),
        builtin: None,
        name,
        hidden: false,
        grants,
        version: 1,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(7);
    let (users_n, mailboxes_n, fanout, depth) = (100_000usize, 200_000usize, 3usize, 8u32);

    // Departments: a tree 8 levels deep with fan-out 3 (3,280 departments).
    let department = || DepartmentId::from_uuid(Uuid::new_v4());
    let mut levels: Vec<Vec<DepartmentId>> = vec![vec![department()]];
    for _ in 1..depth {
        let next: Vec<DepartmentId> = levels
            .last()
            .map(|l| {
                l.iter()
                    .flat_map(|_| (0..fanout).map(|_| department()))
                    .collect()
            })
            .unwrap_or_default();
        levels.push(next);
    }
    let departments: Vec<DepartmentId> = levels.iter().flatten().copied().collect();
    let users: Vec<UserId> = (0..users_n)
        .map(|_| UserId::from_uuid(Uuid::new_v4()))
        .collect();
    let mailboxes: Vec<MailboxId> = (0..mailboxes_n)
        .map(|_| MailboxId::from_uuid(Uuid::new_v4()))
        .collect();

    let before = rss_kib();
    let started = Instant::now();
    let mut graph = OrgGraph::new();
    let mut relationships = 0usize;
    let mut write = |g: &mut OrgGraph, r| {
        g.write(r).expect("valid");
        relationships += 1;
    };
    for u in &users {
        graph.set_user(*u, true);
    }
    for (level, depts) in levels.iter().enumerate().skip(1) {
        for (i, d) in depts.iter().enumerate() {
            write(&mut graph, Parent(*d, levels[level - 1][i / fanout]));
        }
    }
    // One head per department, everyone a member of a department, 5 admins, 20 mailbox
    // managers (a role seeing and changing every mailbox, as the upgrade makes of them), two
    // mailboxes per user, and a reader grant on one mailbox in ten.
    for (i, d) in departments.iter().enumerate() {
        write(&mut graph, Head(*d, users[i]));
    }
    for (i, u) in users.iter().enumerate() {
        write(&mut graph, Member(*u, departments[i % departments.len()]));
    }
    for u in users.iter().rev().take(5) {
        write(&mut graph, Admin(*u));
    }
    // Roles: Administrator, Supervisor (heads), Manager (everyone else); the mailbox managers';
    // `custom_roles` roles on `role_departments` departments spread over the tree below its top
    // three levels, round-robin, every other one with its sub-departments; and a
    // Department-scope view for the head of a level-2 department (same reach as supervising).
    graph.ensure_default_roles();
    let managers = custom_role(
        "Mailbox managers".into(),
        Grants {
            view_mailbox_list: Scope::All,
            connect_mailboxes: Scope::All,
            modify_mailboxes: Scope::All,
            grant_read_access: Scope::Own,
            invite: false,
            manage_permissions: false,
        },
    );
    graph.put_role(managers.clone());
    for u in users.iter().rev().skip(5).take(20) {
        write(
            &mut graph,
            Relationship::Assignee(managers.id, Assignee::User(*u)),
        );
    }
    let custom: Vec<RoleDef> = (0..args.custom_roles)
        .map(|i| custom_role(format!("Team role {i}"), answer_preserving(i)))
        .collect();
    for role in &custom {
        graph.put_role(role.clone());
    }
    let top = levels.iter().take(3).map(Vec::len).sum::<usize>();
    let eligible = &departments[top.min(departments.len())..];
    let role_departments = args.role_departments.min(eligible.len());
    let mut role_holders: Vec<UserId> = Vec::new();
    if !custom.is_empty() {
        for j in 0..role_departments {
            let d = eligible[j * eligible.len() / role_departments];
            let role = custom[j % custom.len()].id;
            let who = if j.is_multiple_of(2) {
                Assignee::Members(d)
            } else {
                Assignee::Tree(d)
            };
            write(&mut graph, Relationship::Assignee(role, who));
            let k = departments.iter().position(|x| *x == d).unwrap_or(0);
            // Members of d: users k, k + |departments|, …
            role_holders.extend(users.iter().skip(k).step_by(departments.len()).copied());
        }
    }
    let department_head = users[departments
        .iter()
        .position(|d| Some(d) == levels[2].get(1))
        .unwrap_or(0)];
    let department_view = custom_role(
        "Department view".into(),
        Grants {
            view_mailbox_list: Scope::Department,
            ..answer_preserving(0)
        },
    );
    graph.put_role(department_view.clone());
    write(
        &mut graph,
        Relationship::Assignee(department_view.id, Assignee::User(department_head)),
    );
    for (i, m) in mailboxes.iter().enumerate() {
        write(&mut graph, Owner(*m, users[i / 2]));
        if i % 10 == 0 {
            write(&mut graph, Reader(*m, users[rng.gen_range(0..users_n)]));
        }
    }
    graph.refresh();
    let build = started.elapsed();
    let memory_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;

    // Checks: random users, permissions and mailboxes (most answers are "no", as in life).
    let perms = [
        Permission::MailboxView,
        Permission::MailboxModify,
        Permission::MailboxReadMail,
        Permission::MailboxSync,
    ];
    let n = 1_000_000;
    let mut lat = Vec::with_capacity(n);
    let mut allowed = 0usize;
    let t = Instant::now();
    for i in 0..n {
        let (u, m) = (
            users[rng.gen_range(0..users_n)],
            mailboxes[rng.gen_range(0..mailboxes_n)],
        );
        let s = Instant::now();
        allowed += usize::from(graph.check(u, perms[i % 4], Some(m)).unwrap_or(false));
        lat.push(s.elapsed().as_nanos() as u64);
    }
    let checks_per_s = n as f64 / t.elapsed().as_secs_f64();
    lat.sort_unstable();

    // A supervisor over ~10k subordinates: the head of a level-2 department (1/9 of the tree).
    let boss = users[departments
        .iter()
        .position(|d| *d == levels[2][0])
        .unwrap_or(0)];
    let mut lookup = Vec::new();
    let mut found = 0;
    for _ in 0..50 {
        let s = Instant::now();
        found = graph.lookup_mailboxes(boss, Permission::MailboxView).len();
        lookup.push(s.elapsed().as_nanos() as u64);
    }
    lookup.sort_unstable();
    let subordinates = graph.subordinates(boss).len();
    let mut department_lookup = Vec::new();
    let mut department_found = 0;
    for _ in 0..50 {
        let s = Instant::now();
        department_found = graph
            .lookup_mailboxes(department_head, Permission::MailboxView)
            .len();
        department_lookup.push(s.elapsed().as_nanos() as u64);
    }
    department_lookup.sort_unstable();
    // Checks by people holding a department's custom role (explicit roles, no Manager).
    let mut holder_lat = Vec::new();
    let mut holder_allowed = 0usize;
    if !role_holders.is_empty() {
        for i in 0..200_000 {
            let (u, m) = (
                role_holders[rng.gen_range(0..role_holders.len())],
                mailboxes[rng.gen_range(0..mailboxes_n)],
            );
            let s = Instant::now();
            holder_allowed += usize::from(graph.check(u, perms[i % 4], Some(m)).unwrap_or(false));
            holder_lat.push(s.elapsed().as_nanos() as u64);
        }
        holder_lat.sort_unstable();
    }
    // A role edit makes the joined grants stale; refresh rebuilds them (the replica does it
    // after each batch of changes).
    let mut refresh = Vec::new();
    if let Some(first) = custom.first() {
        for i in 0..20usize {
            let mut edited = first.clone();
            edited.version += 1 + i as i64;
            edited.grants.view_mailbox_list = if i.is_multiple_of(2) {
                Scope::Subordinates
            } else {
                Scope::Own
            };
            graph.put_role(edited);
            let s = Instant::now();
            graph.refresh();
            refresh.push(s.elapsed().as_nanos() as u64);
        }
        graph.put_role(first.clone());
        graph.refresh();
        refresh.sort_unstable();
    }
    let mut subjects = Vec::new();
    for _ in 0..10_000 {
        let m = mailboxes[rng.gen_range(0..mailboxes_n)];
        let s = Instant::now();
        std::hint::black_box(graph.lookup_users(m, Permission::MailboxView));
        subjects.push(s.elapsed().as_nanos() as u64);
    }
    subjects.sort_unstable();

    println!("graph: {users_n} users, {mailboxes_n} mailboxes, {} departments in {depth} levels, {relationships} relationships", departments.len());
    println!(
        "roles: 3 defaults, \"Mailbox managers\" (20 people), {} custom on {role_departments} departments (half with sub-departments; {} people hold one), 1 Department-scope role",
        custom.len(),
        role_holders.len()
    );
    println!(
        "build (restart cost, in memory):   {:.2} s",
        build.as_secs_f64()
    );
    println!("memory held by the graph:          {memory_mib:.0} MiB (RSS growth)");
    println!("check, one thread:                 {checks_per_s:.0}/s  p50 {:.2} µs  p99 {:.2} µs  ({allowed} allowed)", percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!("lookup_mailboxes, supervisor over {subordinates} subordinates ({found} mailboxes): p50 {:.2} ms  p95 {:.2} ms", percentile(&lookup, 0.5) / 1000.0, percentile(&lookup, 0.95) / 1000.0);
    println!("lookup_mailboxes, head under a Department-scope role ({department_found} mailboxes): p50 {:.2} ms  p95 {:.2} ms", percentile(&department_lookup, 0.5) / 1000.0, percentile(&department_lookup, 0.95) / 1000.0);
    if !holder_lat.is_empty() {
        println!("check, department-role holders:    p50 {:.2} µs  p99 {:.2} µs  ({holder_allowed} of {} allowed)", percentile(&holder_lat, 0.5), percentile(&holder_lat, 0.99), holder_lat.len());
    }
    println!(
        "lookup_users (view; access-by column): p50 {:.2} µs  p99 {:.2} µs",
        percentile(&subjects, 0.5),
        percentile(&subjects, 0.99)
    );
    if !refresh.is_empty() {
        println!(
            "refresh after a role edit:         p50 {:.2} ms  max {:.2} ms",
            percentile(&refresh, 0.5) / 1000.0,
            percentile(&refresh, 1.0) / 1000.0
        );
    }
}
