//! Walks of the department tree. Supervision: a head supervises everyone in the departments
//! they head and below, and the heads of the departments below. A department scope ("own
//! department and below") reaches everyone who is a member or head of a department at or below
//! one the holder is a member or head of. Every walk is bounded by the number of parent edges
//! (up) or remembers where it has been (down), so even a cycle that identity's out-of-order
//! events pass through (see [`OrgGraph::apply`]) ends.

use mailroom_types::{DepartmentId, UserId};

use super::{OrgGraph, Set};
use crate::model::Relationship;

impl OrgGraph {
    /// `department`, then its parent, and so on up to the top. Bounded by the number of
    /// parent edges, so even a cycle (see [`OrgGraph::apply`]) ends.
    pub(super) fn ancestors_or_self(
        &self,
        department: DepartmentId,
    ) -> impl Iterator<Item = DepartmentId> + '_ {
        std::iter::successors(Some(department), move |d| self.parent.get(d).copied())
            .take(self.parent.len() + 1)
    }

    /// Whether `boss` supervises `user`: heads the user's department or one above it, or a
    /// department above one the user heads.
    pub fn supervises(&self, boss: UserId, user: UserId) -> bool {
        if boss == user || !self.active(&boss) {
            return false;
        }
        let Some(bossed) = self.headed_by.get(&boss) else {
            return false;
        };
        let from_membership = self
            .member_of
            .get(&user)
            .into_iter()
            .flatten()
            .flat_map(|d| self.ancestors_or_self(*d));
        let from_heading = self
            .headed_by
            .get(&user)
            .into_iter()
            .flatten()
            .flat_map(|d| self.ancestors_or_self(*d).skip(1));
        from_membership
            .chain(from_heading)
            .any(|d| bossed.contains(&d))
    }

    /// Everyone `boss` supervises.
    pub fn subordinates(&self, boss: UserId) -> Set<UserId> {
        let mut out = Set::default();
        if !self.active(&boss) {
            return out;
        }
        let mut seen: Set<DepartmentId> = Set::default();
        for top in self.headed_by.get(&boss).into_iter().flatten() {
            let mut stack = vec![(*top, true)];
            while let Some((d, is_top)) = stack.pop() {
                if !is_top && !seen.insert(d) {
                    continue;
                }
                out.extend(self.members.get(&d).into_iter().flatten().copied());
                if !is_top {
                    out.extend(self.heads.get(&d).into_iter().flatten().copied());
                }
                stack.extend(
                    self.children
                        .get(&d)
                        .into_iter()
                        .flatten()
                        .map(|c| (*c, false)),
                );
            }
        }
        out.remove(&boss);
        out
    }

    /// Everyone who supervises `user`.
    pub fn supervisors(&self, user: UserId) -> Set<UserId> {
        let mut departments: Vec<DepartmentId> = Vec::new();
        for d in self.member_of.get(&user).into_iter().flatten() {
            departments.extend(self.ancestors_or_self(*d));
        }
        for d in self.headed_by.get(&user).into_iter().flatten() {
            departments.extend(self.ancestors_or_self(*d).skip(1));
        }
        departments
            .iter()
            .flat_map(|d| self.heads.get(d).into_iter().flatten().copied())
            .filter(|h| *h != user && self.active(h))
            .collect()
    }

    /// The relationships by which `boss` supervises `user`: how `user` sits in a department
    /// (member of it, or head of one below), the parents up to the department `boss` heads,
    /// and that head relationship.
    pub(super) fn supervision_chain(
        &self,
        boss: UserId,
        user: UserId,
    ) -> Option<Vec<Relationship>> {
        if !self.supervises(boss, user) {
            return None;
        }
        let bossed = self.headed_by.get(&boss)?;
        let starts = self
            .member_of
            .get(&user)
            .into_iter()
            .flatten()
            .map(|d| (Relationship::Member(user, *d), *d, true))
            .chain(
                self.headed_by
                    .get(&user)
                    .into_iter()
                    .flatten()
                    .map(|d| (Relationship::Head(*d, user), *d, false)),
            );
        for (first, department, counts_itself) in starts {
            let mut path = vec![first];
            let mut current = department;
            let mut at_start = true;
            for _ in 0..=self.parent.len() {
                if (counts_itself || !at_start) && bossed.contains(&current) {
                    path.push(Relationship::Head(current, boss));
                    return Some(path);
                }
                let Some(parent) = self.parent.get(&current).copied() else {
                    break;
                };
                path.push(Relationship::Parent(current, parent));
                current = parent;
                at_start = false;
            }
        }
        None
    }

    /// `tops` and every department below them, each once.
    pub(super) fn subtree(
        &self,
        tops: impl IntoIterator<Item = DepartmentId>,
    ) -> Set<DepartmentId> {
        let mut seen = Set::default();
        let mut stack: Vec<DepartmentId> = tops.into_iter().collect();
        while let Some(d) = stack.pop() {
            if seen.insert(d) {
                stack.extend(self.children.get(&d).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// Whether `department` is at or below one of the departments `is_top` accepts.
    pub(super) fn under(
        &self,
        department: DepartmentId,
        is_top: impl Fn(DepartmentId) -> bool,
    ) -> bool {
        self.ancestors_or_self(department).any(is_top)
    }

    /// Everyone a department scope held by `holder` reaches: the holder, and every member and
    /// head of the departments at or below the holder's own (those they are a member or head
    /// of).
    pub fn department_reach(&self, holder: UserId) -> Set<UserId> {
        let mut out = Set::from_iter([holder]);
        for d in self.subtree(self.home(holder)) {
            out.extend(self.members.get(&d).into_iter().flatten().copied());
            out.extend(self.heads.get(&d).into_iter().flatten().copied());
        }
        out
    }

    /// The relationships by which a department scope held by `holder` reaches `owner`: how the
    /// owner sits in a department (member or head), the parents up to one of the holder's
    /// departments, and how the holder sits in that one. `None` when it does not reach (or
    /// when `holder == owner`, which takes no chain).
    pub(super) fn department_chain(
        &self,
        holder: UserId,
        owner: UserId,
    ) -> Option<Vec<Relationship>> {
        let starts = self
            .member_of
            .get(&owner)
            .into_iter()
            .flatten()
            .map(|d| (Relationship::Member(owner, *d), *d))
            .chain(
                self.headed_by
                    .get(&owner)
                    .into_iter()
                    .flatten()
                    .map(|d| (Relationship::Head(*d, owner), *d)),
            );
        for (first, department) in starts {
            let mut path = vec![first];
            let mut current = department;
            for _ in 0..=self.parent.len() {
                if self
                    .member_of
                    .get(&holder)
                    .is_some_and(|ds| ds.contains(&current))
                {
                    path.push(Relationship::Member(holder, current));
                    return Some(path);
                }
                if self
                    .headed_by
                    .get(&holder)
                    .is_some_and(|ds| ds.contains(&current))
                {
                    path.push(Relationship::Head(current, holder));
                    return Some(path);
                }
                let Some(parent) = self.parent.get(&current).copied() else {
                    break;
                };
                path.push(Relationship::Parent(current, parent));
                current = parent;
            }
        }
        None
    }
}
