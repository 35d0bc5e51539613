//! The access engine in process, at the access issue's scale: 100k users, 200k mailboxes, an
//! 8-level department tree. Measures `check` (mixed roles and permissions), a supervisor's
//! `lookup_mailboxes` over ~10k subordinates, `lookup_users`, the time to build the graph
//! (what a restart costs) and the memory it holds. No gRPC: this is the ceiling the service
//! adds its transport to. Run with `.ci/bench access-engine`.

use std::time::Instant;

use mailroom_access::model::Relationship::*;
use mailroom_access::OrgGraph;
use mailroom_platform::types::{DepartmentId, MailboxId, Permission, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

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
    // One head per department, everyone a member of a department, 5 admins, 20 managers,
    // two mailboxes per user, and a reader grant on one mailbox in ten.
    for (i, d) in departments.iter().enumerate() {
        write(&mut graph, Head(*d, users[i]));
    }
    for (i, u) in users.iter().enumerate() {
        write(&mut graph, Member(*u, departments[i % departments.len()]));
    }
    for u in users.iter().rev().take(5) {
        write(&mut graph, Admin(*u));
    }
    for u in users.iter().rev().skip(5).take(20) {
        write(&mut graph, MailboxManager(*u));
    }
    for (i, m) in mailboxes.iter().enumerate() {
        write(&mut graph, Owner(*m, users[i / 2]));
        if i % 10 == 0 {
            write(&mut graph, Reader(*m, users[rng.gen_range(0..users_n)]));
        }
    }
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
        "build (restart cost, in memory):   {:.2} s",
        build.as_secs_f64()
    );
    println!("memory held by the graph:          {memory_mib:.0} MiB (RSS growth)");
    println!("check, one thread:                 {checks_per_s:.0}/s  p50 {:.2} µs  p99 {:.2} µs  ({allowed} allowed)", percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!("lookup_mailboxes, supervisor over {subordinates} subordinates ({found} mailboxes): p50 {:.2} ms  p95 {:.2} ms", percentile(&lookup, 0.5) / 1000.0, percentile(&lookup, 0.95) / 1000.0);
    println!(
        "lookup_users (view; access-by column): p50 {:.2} µs  p99 {:.2} µs",
        percentile(&subjects, 0.5),
        percentile(&subjects, 0.99)
    );
}
