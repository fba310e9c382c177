//! The classic consumer group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) as a state machine free of I/O and clocks: every call takes
//! the time, a request and a waiter id, and pushes [`Output`]s: answers to
//! waiters (now or later) and "persist this group". The coordinator
//! (`groups::coordinator`) owns the channels behind the waiter ids and the
//! log writes; tests and a simulator can drive this directly.
//!
//! States follow Kafka's: `Empty` → `PreparingRebalance` (collecting
//! joins) → `CompletingRebalance` (waiting for the leader's assignment) →
//! `Stable`. Assignment itself is the clients' business: the leader gets
//! every member's protocol metadata and sends back opaque assignments.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

/// Names a pending answer; the coordinator maps it to a channel.
pub type Waiter = u64;

/// Kafka's group states (names as DescribeGroups and ListGroups report them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Broker-wide bounds (`group.min.session.timeout.ms`, ...).
#[derive(Debug, Clone)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long an empty group waits
    /// for more members before its first generation.
    pub initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes`: how long an empty group's offsets live.
    pub offsets_retention_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
    /// The session ends at this time unless refreshed.
    deadline: u64,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+: a new dynamic member first gets its id with
    /// MEMBER_ID_REQUIRED and joins again with it (KIP-394).
    pub require_known_member_id: bool,
    /// The id a new member gets (the caller makes it unique).
    pub new_member_id: String,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members: (id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(e: E, member_id: &str) -> Self {
        Self {
            error: e.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(e: E) -> Self {
        Self {
            error: e.code(),
            ..Self::default()
        }
    }
}

/// What the caller must do after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Join(Waiter, JoinResult),
    Sync(Waiter, SyncResult),
    /// Membership or generation changed: write the group's record.
    Persist,
}

/// A committed offset (the value of an offset commit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Where the commit record sits in `__consumer_offsets`: a commit only
    /// replaces one written before it, whatever order durability wakes in.
    pub record_offset: u64,
}

/// One group: membership and committed offsets.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they expire.
    pending: HashMap<String, u64>,
    /// PreparingRebalance ends by then at the latest.
    join_deadline: u64,
    /// An empty group's first rebalance waits until then.
    initial_deadline: u64,
    /// `group.initial.rebalance.delay.ms`, as of the last join.
    initial_delay_ms: u64,
    /// Since when the group has had no members (0: not known yet).
    empty_since: u64,
    pub offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            join_deadline: 0,
            initial_deadline: 0,
            initial_delay_ms: 0,
            empty_since: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// A group as its persisted record describes it; members get a fresh
    /// session (they heartbeat to the new coordinator, or expire).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        id: &str,
        protocol_type: Option<String>,
        generation: i32,
        protocol: Option<String>,
        leader: Option<String>,
        members: Vec<Member>,
        now: u64,
    ) -> Self {
        let mut g = Group::new(id);
        g.protocol_type = protocol_type;
        g.generation = generation;
        if !members.is_empty() && protocol.is_some() {
            g.state = GroupState::Stable;
            g.protocol = protocol;
            g.leader = leader;
            for mut m in members {
                m.deadline = now + m.session_timeout_ms;
                g.members.insert(m.id.clone(), m);
            }
        }
        g
    }

    /// A member as a persisted record describes it.
    #[allow(clippy::too_many_arguments)]
    pub fn stored_member(
        id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        session_timeout_ms: u64,
        rebalance_timeout_ms: u64,
        protocol: Option<(String, Bytes)>,
        assignment: Bytes,
    ) -> Member {
        Member {
            id,
            instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols: protocol.into_iter().collect(),
            assignment,
            join_waiter: None,
            sync_waiter: None,
            deadline: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    fn member_of_instance(&self, instance: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }

    /// FENCED_INSTANCE_ID if `instance` now belongs to another member id.
    fn check_instance(&self, member_id: &str, instance: Option<&str>) -> Result<(), E> {
        if let Some(inst) = instance {
            if let Some(owner) = self.member_of_instance(inst) {
                if owner != member_id {
                    return Err(E::FencedInstanceId);
                }
            }
        }
        Ok(())
    }

    /// Protocols every member (and `extra`) supports.
    fn common_protocols<'a>(&'a self, extra: Option<&'a [(String, Bytes)]>) -> Vec<&'a str> {
        let mut lists: Vec<&[(String, Bytes)]> = self
            .members
            .values()
            .map(|m| m.protocols.as_slice())
            .collect();
        lists.extend(extra);
        let Some(first) = lists.first() else {
            return Vec::new();
        };
        first
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| lists.iter().all(|l| l.iter().any(|(m, _)| m == n)))
            .collect()
    }

    /// Each member votes for its most preferred common protocol; ties go
    /// to the one listed first by the first member.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.common_protocols(None);
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == n) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.to_string())
    }

    fn current_join(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata(self.protocol.as_deref()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// JoinGroup.
    pub fn join(
        &mut self,
        a: JoinArgs,
        waiter: Waiter,
        now: u64,
        limits: &Limits,
        out: &mut Vec<Output>,
    ) {
        self.initial_delay_ms = limits.initial_rebalance_delay_ms;
        let reply_err = |e: E, id: &str, out: &mut Vec<Output>| {
            out.push(Output::Join(waiter, JoinResult::error(e, id)))
        };
        if a.session_timeout_ms < limits.min_session_timeout_ms
            || a.session_timeout_ms > limits.max_session_timeout_ms
        {
            return reply_err(E::InvalidSessionTimeout, &a.member_id, out);
        }
        if a.protocol_type.is_empty() || a.protocols.is_empty() {
            return reply_err(E::InconsistentGroupProtocol, &a.member_id, out);
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(a.protocol_type.as_str());
            // A known member's own old protocols do not count against it.
            let others: Vec<&[(String, Bytes)]> = self
                .members
                .values()
                .filter(|m| m.id != a.member_id)
                .map(|m| m.protocols.as_slice())
                .collect();
            let shared = a
                .protocols
                .iter()
                .any(|(n, _)| others.iter().all(|l| l.iter().any(|(m, _)| m == n)));
            if !same_type || !shared {
                return reply_err(E::InconsistentGroupProtocol, &a.member_id, out);
            }
        }
        let session = a.session_timeout_ms.max(0) as u64;
        let rebalance = a.rebalance_timeout_ms.max(a.session_timeout_ms).max(0) as u64;

        if let Some(inst) = a.instance_id.clone() {
            match self.member_of_instance(&inst).map(str::to_string) {
                Some(old) if a.member_id.is_empty() => {
                    // A static member restarted: it takes over its old
                    // entry under a new id; the old id is fenced.
                    let new_id = a.new_member_id.clone();
                    let mut m = self
                        .members
                        .remove(&old)
                        .expect("member of instance exists");
                    for w in [m.join_waiter.take()].into_iter().flatten() {
                        out.push(Output::Join(
                            w,
                            JoinResult::error(E::FencedInstanceId, &old),
                        ));
                    }
                    for w in [m.sync_waiter.take()].into_iter().flatten() {
                        out.push(Output::Sync(w, SyncResult::error(E::FencedInstanceId)));
                    }
                    let unchanged = m.protocols == a.protocols;
                    m.id = new_id.clone();
                    m.client_id = a.client_id.clone();
                    m.client_host = a.client_host.clone();
                    m.session_timeout_ms = session;
                    m.rebalance_timeout_ms = rebalance;
                    m.protocols = a.protocols.clone();
                    m.deadline = now + session;
                    let was_leader = self.leader.as_deref() == Some(old.as_str());
                    if was_leader {
                        self.leader = Some(new_id.clone());
                    }
                    self.members.insert(new_id.clone(), m);
                    if self.state == GroupState::Stable && unchanged && !was_leader {
                        out.push(Output::Persist);
                        out.push(Output::Join(waiter, self.current_join(&new_id)));
                        return;
                    }
                    return self.rejoin(&new_id, waiter, now, out);
                }
                Some(old) if old != a.member_id => {
                    return reply_err(E::FencedInstanceId, &a.member_id, out);
                }
                Some(_) => {} // a known static member: a rejoin, below
                None if a.member_id.is_empty() => {
                    let id = a.new_member_id.clone();
                    return self.add_member(a, id, session, rebalance, waiter, now, out);
                }
                None => return reply_err(E::UnknownMemberId, &a.member_id, out),
            }
        } else if a.member_id.is_empty() {
            let id = a.new_member_id.clone();
            if a.require_known_member_id {
                self.pending.insert(id.clone(), now + session);
                return reply_err(E::MemberIdRequired, &id, out);
            }
            return self.add_member(a, id, session, rebalance, waiter, now, out);
        } else if !self.members.contains_key(&a.member_id) {
            if self.pending.remove(&a.member_id).is_some() {
                let id = a.member_id.clone();
                return self.add_member(a, id, session, rebalance, waiter, now, out);
            }
            return reply_err(E::UnknownMemberId, &a.member_id, out);
        }

        // A known member joins again.
        let id = a.member_id.clone();
        let m = self.members.get_mut(&id).expect("known member");
        let unchanged = m.protocols == a.protocols;
        m.client_id = a.client_id;
        m.client_host = a.client_host;
        m.session_timeout_ms = session;
        m.rebalance_timeout_ms = rebalance;
        m.protocols = a.protocols;
        m.deadline = now + session;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::CompletingRebalance if unchanged => {
                out.push(Output::Join(waiter, self.current_join(&id)))
            }
            GroupState::Stable if unchanged && !is_leader => {
                out.push(Output::Join(waiter, self.current_join(&id)))
            }
            _ => self.rejoin(&id, waiter, now, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_member(
        &mut self,
        a: JoinArgs,
        id: String,
        session: u64,
        rebalance: u64,
        waiter: Waiter,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(a.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: a.instance_id,
                client_id: a.client_id,
                client_host: a.client_host,
                session_timeout_ms: session,
                rebalance_timeout_ms: rebalance,
                protocols: a.protocols,
                assignment: Bytes::new(),
                join_waiter: None,
                sync_waiter: None,
                deadline: now + session,
            },
        );
        self.rejoin(&id, waiter, now, out);
    }

    /// Park `id`'s join until the generation completes.
    fn rejoin(&mut self, id: &str, waiter: Waiter, now: u64, out: &mut Vec<Output>) {
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, out);
        }
        let m = self.members.get_mut(id).expect("member just added");
        if let Some(old) = m.join_waiter.replace(waiter) {
            out.push(Output::Join(
                old,
                JoinResult::error(E::RebalanceInProgress, id),
            ));
        }
        self.maybe_complete_join(now, out);
    }

    fn prepare_rebalance(&mut self, now: u64, out: &mut Vec<Output>) {
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                out.push(Output::Sync(w, SyncResult::error(E::RebalanceInProgress)));
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.join_deadline = now + longest;
        self.initial_deadline = if was_empty {
            now + self.initial_delay_ms
        } else {
            0
        };
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn maybe_complete_join(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance
            && self.all_joined()
            && now >= self.initial_deadline
        {
            self.complete_join(now, out);
        }
    }

    /// End PreparingRebalance: members that did not rejoin are out; the
    /// rest get the new generation (the leader with everyone's metadata).
    fn complete_join(&mut self, now: u64, out: &mut Vec<Output>) {
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            out.push(Output::Persist);
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join(&id);
            let m = self.members.get_mut(&id).expect("member listed");
            m.deadline = now + m.session_timeout_ms;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                out.push(Output::Join(w, result));
            }
        }
    }

    /// SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: Waiter,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let fail =
            |e: E, out: &mut Vec<Output>| out.push(Output::Sync(waiter, SyncResult::error(e)));
        if let Err(e) = self.check_instance(member_id, instance_id) {
            return fail(e, out);
        }
        if !self.members.contains_key(member_id) {
            return fail(E::UnknownMemberId, out);
        }
        if generation != self.generation {
            return fail(E::IllegalGeneration, out);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return fail(E::InconsistentGroupProtocol, out);
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        match self.state {
            GroupState::Empty | GroupState::PreparingRebalance => fail(E::RebalanceInProgress, out),
            GroupState::Stable => {
                let m = self.members.get_mut(member_id).expect("checked");
                m.deadline = now + m.session_timeout_ms;
                let a = m.assignment.clone();
                out.push(Output::Sync(waiter, ok(self, a)));
            }
            GroupState::CompletingRebalance => {
                let m = self.members.get_mut(member_id).expect("checked");
                m.deadline = now + m.session_timeout_ms;
                if let Some(old) = m.sync_waiter.replace(waiter) {
                    out.push(Output::Sync(old, SyncResult::error(E::RebalanceInProgress)));
                }
                if self.leader.as_deref() != Some(member_id) {
                    return;
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                out.push(Output::Persist);
                let ready: Vec<(Waiter, Bytes)> = self
                    .members
                    .values_mut()
                    .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                    .collect();
                for (w, a) in ready {
                    out.push(Output::Sync(w, ok(self, a)));
                }
            }
        }
    }

    /// Heartbeat: the error code to answer with.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: u64,
    ) -> Result<(), E> {
        self.check_instance(member_id, instance_id)?;
        let state = self.state;
        let current = self.generation;
        let m = self.members.get_mut(member_id).ok_or(E::UnknownMemberId)?;
        if generation != current {
            return Err(E::IllegalGeneration);
        }
        m.deadline = now + m.session_timeout_ms;
        match state {
            GroupState::PreparingRebalance => Err(E::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member (by id, or by instance id when the id is
    /// empty): the error code for it.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), E> {
        let id = match instance_id {
            Some(inst) => match self.member_of_instance(inst) {
                Some(owner) if member_id.is_empty() || owner == member_id => owner.to_string(),
                Some(_) => return Err(E::FencedInstanceId),
                None => return Err(E::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(E::UnknownMemberId);
        }
        self.remove_member(&id, now, out);
        Ok(())
    }

    fn remove_member(&mut self, id: &str, now: u64, out: &mut Vec<Output>) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(w) = m.join_waiter.take() {
            out.push(Output::Join(w, JoinResult::error(E::UnknownMemberId, id)));
        }
        if let Some(w) = m.sync_waiter.take() {
            out.push(Output::Sync(w, SyncResult::error(E::UnknownMemberId)));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, out);
                self.maybe_complete_join(now, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, out),
            GroupState::Empty => {}
        }
    }

    /// Whether an OffsetCommit from this member may commit (Kafka's rules:
    /// generation -1 with no member is a "simple" commit, allowed while the
    /// group has no members).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: u64,
    ) -> Result<(), E> {
        if generation < 0 && member_id.is_empty() && self.state == GroupState::Empty {
            return Ok(());
        }
        self.check_instance(member_id, instance_id)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(E::RebalanceInProgress);
        }
        let current = self.generation;
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(if generation < 0 {
                E::IllegalGeneration
            } else {
                E::UnknownMemberId
            });
        };
        if generation != current {
            return Err(E::IllegalGeneration);
        }
        m.deadline = now + m.session_timeout_ms;
        Ok(())
    }

    /// Time passes: sessions expire, PreparingRebalance ends at its
    /// deadline, handed-out member ids lapse.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Output>) {
        self.pending.retain(|_, until| *until > now);
        if self.state == GroupState::PreparingRebalance {
            if now >= self.join_deadline && now >= self.initial_deadline {
                let late: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.join_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                if !late.is_empty() {
                    tracing::info!(group = %self.id, members = ?late, "removed members that did not rejoin in time");
                }
                self.complete_join(now, out);
            } else {
                self.maybe_complete_join(now, out);
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now, out);
        }
    }

    /// Committed offsets past `offsets.retention.minutes` (KIP-211): all of
    /// them once a group has been empty that long; for a group that never
    /// had members ("simple" commits), each offset by its commit time.
    /// Removed here; the caller writes their tombstones.
    pub fn expire_offsets(&mut self, now: u64, retention_ms: u64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            self.empty_since = 0;
            return Vec::new();
        }
        if self.empty_since == 0 {
            self.empty_since = now;
        }
        let simple = self.protocol_type.is_none();
        let group_expired = self.empty_since + retention_ms <= now;
        let expired: Vec<(String, i32)> = self
            .offsets
            .iter()
            .filter(|(_, c)| {
                if simple {
                    (c.commit_timestamp.max(0) as u64) + retention_ms <= now
                } else {
                    group_expired
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.offsets.remove(k);
        }
        expired
    }

    /// An empty group with nothing committed can be forgotten.
    pub fn is_dead(&self) -> bool {
        self.state == GroupState::Empty && self.offsets.is_empty() && self.pending.is_empty()
    }

    /// The topics a consumer-protocol group is subscribed to (from its
    /// members' subscriptions), for OffsetDelete.
    pub fn subscribed_topics(&self) -> Vec<String> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return Vec::new();
        }
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| subscription_topics(&m.metadata(self.protocol.as_deref())))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Waiters still parked here (to answer when the coordinator goes away).
    pub fn take_waiters(&mut self, out: &mut Vec<Output>) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                out.push(Output::Join(w, JoinResult::error(E::NotCoordinator, &m.id)));
            }
            if let Some(w) = m.sync_waiter.take() {
                out.push(Output::Sync(w, SyncResult::error(E::NotCoordinator)));
            }
        }
    }
}

/// Topic names of a consumer protocol subscription (version i16, then an
/// array of strings); an unreadable one has none.
pub fn subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let rd = |at: usize, n: usize| meta.get(at..at + n);
    let Some(count) = rd(2, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
        return out;
    };
    let mut at = 6;
    for _ in 0..count.max(0) {
        let Some(len) = rd(at, 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            break;
        };
        let Some(name) = rd(at + 2, len.max(0) as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        at += 2 + len.max(0) as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 100_000,
        initial_rebalance_delay_ms: 0,
        offsets_retention_ms: 1_000,
    };

    fn committed(offset: i64, at: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: at,
            record_offset: 0,
        }
    }

    #[test]
    fn offsets_expire_after_the_group_is_empty_for_the_retention() {
        // A simple-commit group: each offset by its own commit time.
        let mut g = Group::new("simple");
        g.offsets.insert(("t".into(), 0), committed(5, 100));
        g.offsets.insert(("t".into(), 1), committed(6, 900));
        assert!(g.expire_offsets(1_099, 1_000).is_empty());
        assert_eq!(g.expire_offsets(1_100, 1_000), vec![("t".to_string(), 0)]);
        assert_eq!(g.expire_offsets(1_900, 1_000), vec![("t".to_string(), 1)]);
        assert!(g.is_dead());
        // A consumer group keeps offsets while it has members.
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        g.offsets.insert(("t".into(), 0), committed(5, 0));
        assert!(g.expire_offsets(10_000, 1_000).is_empty());
        let mut out = Vec::new();
        assert_eq!(g.leave("a", None, 10_000, &mut out), Ok(()));
        assert!(
            g.expire_offsets(10_500, 1_000).is_empty(),
            "the clock starts when it empties"
        );
        assert_eq!(g.expire_offsets(11_500, 1_000).len(), 1);
        assert!(g.is_dead());
    }

    fn args(member: &str, new_id: &str) -> JoinArgs {
        JoinArgs {
            member_id: member.into(),
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"m")),
                ("roundrobin".into(), Bytes::new()),
            ],
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            require_known_member_id: true,
            new_member_id: new_id.into(),
            client_id: "c".into(),
            ..JoinArgs::default()
        }
    }

    fn join_of(out: &[Output], w: Waiter) -> Option<JoinResult> {
        out.iter().find_map(|o| match o {
            Output::Join(x, r) if *x == w => Some(r.clone()),
            _ => None,
        })
    }

    fn sync_of(out: &[Output], w: Waiter) -> Option<SyncResult> {
        out.iter().find_map(|o| match o {
            Output::Sync(x, r) if *x == w => Some(r.clone()),
            _ => None,
        })
    }

    /// Join a new dynamic member the KIP-394 way; returns its id and the
    /// outputs of the second join.
    fn join_new(g: &mut Group, id: &str, w: Waiter, now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        g.join(args("", id), w, now, &L, &mut out);
        let r = join_of(&out, w).expect("answered at once");
        assert_eq!(r.error, E::MemberIdRequired.code());
        assert_eq!(r.member_id, id);
        let mut out = Vec::new();
        g.join(args(id, "unused"), w + 1000, now, &L, &mut out);
        out
    }

    #[test]
    fn one_member_gets_a_generation_and_syncs() {
        let mut g = Group::new("g");
        let out = join_new(&mut g, "a", 1, 0);
        let r = join_of(&out, 1001).expect("join completes: everyone joined");
        assert_eq!((r.error, r.generation, r.leader.as_str()), (0, 1, "a"));
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let mut out = Vec::new();
        g.sync(
            "a",
            None,
            1,
            Some("consumer"),
            Some("range"),
            vec![("a".into(), Bytes::from_static(b"A"))],
            2,
            1,
            &mut out,
        );
        let s = sync_of(&out, 2).unwrap();
        assert_eq!((s.error, &s.assignment[..]), (0, &b"A"[..]));
        assert!(out.contains(&Output::Persist));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat("a", None, 1, 2), Ok(()));
        assert_eq!(g.heartbeat("a", None, 0, 2), Err(E::IllegalGeneration));
        assert_eq!(g.heartbeat("zz", None, 1, 2), Err(E::UnknownMemberId));
    }

    #[test]
    fn second_member_triggers_rebalance_and_follower_waits_for_leader() {
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        let mut out = Vec::new();
        g.sync(
            "a",
            None,
            1,
            None,
            None,
            vec![("a".into(), Bytes::from_static(b"all"))],
            2,
            0,
            &mut out,
        );
        // b joins: a learns of the rebalance through its heartbeat.
        let out = join_new(&mut g, "b", 10, 10);
        assert!(join_of(&out, 1010).is_none(), "b waits for a to rejoin");
        assert_eq!(g.heartbeat("a", None, 1, 20), Err(E::RebalanceInProgress));
        let mut out = Vec::new();
        g.join(args("a", "x"), 3, 30, &L, &mut out);
        let ra = join_of(&out, 3).unwrap();
        let rb = join_of(&out, 1010).unwrap();
        assert_eq!((ra.generation, rb.generation), (2, 2));
        assert_eq!(ra.leader, "a");
        assert_eq!(ra.members.len(), 2, "leader sees all members");
        assert!(rb.members.is_empty(), "followers see none");
        // The follower syncs first and waits.
        let mut out = Vec::new();
        g.sync("b", None, 2, None, None, vec![], 11, 31, &mut out);
        assert!(sync_of(&out, 11).is_none());
        let mut out = Vec::new();
        g.sync(
            "a",
            None,
            2,
            None,
            None,
            vec![
                ("a".into(), Bytes::from_static(b"p0")),
                ("b".into(), Bytes::from_static(b"p1")),
            ],
            4,
            32,
            &mut out,
        );
        assert_eq!(&sync_of(&out, 4).unwrap().assignment[..], b"p0");
        assert_eq!(&sync_of(&out, 11).unwrap().assignment[..], b"p1");
    }

    #[test]
    fn a_silent_member_expires_and_the_group_rebalances_without_it() {
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        let mut out = Vec::new();
        g.sync("a", None, 1, None, None, vec![], 2, 0, &mut out);
        join_new(&mut g, "b", 10, 0);
        let mut out = Vec::new();
        g.join(args("a", "x"), 3, 0, &L, &mut out);
        let mut out = Vec::new();
        g.sync("a", None, 2, None, None, vec![], 4, 0, &mut out);
        g.sync("b", None, 2, None, None, vec![], 12, 0, &mut out);
        assert_eq!(g.state, GroupState::Stable);
        // b keeps heartbeating, a goes silent.
        let mut told = None;
        for t in (100..=1100).step_by(100) {
            match g.heartbeat("b", None, 2, t) {
                Ok(()) => {}
                Err(e) => {
                    assert_eq!(e, E::RebalanceInProgress);
                    told.get_or_insert(t);
                }
            }
            let mut out = Vec::new();
            g.tick(t, &mut out);
        }
        assert!(
            told.is_some_and(|t| t > 1000),
            "b learns of the rebalance once a's session (1 s) is over: {told:?}"
        );
        assert!(!g.members.contains_key("a"), "a expired");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let mut out = Vec::new();
        g.join(args("b", "x"), 13, 1150, &L, &mut out);
        let r = join_of(&out, 13).unwrap();
        assert_eq!(
            (r.generation, r.leader.as_str(), r.members.len()),
            (3, "b", 1)
        );
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline() {
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        let mut out = Vec::new();
        g.sync("a", None, 1, None, None, vec![], 2, 0, &mut out);
        join_new(&mut g, "b", 10, 0);
        // a heartbeats (so its session holds) but never rejoins.
        let mut out = Vec::new();
        for t in (0..=5000).step_by(250) {
            let _ = g.heartbeat("a", None, 1, t);
            g.tick(t, &mut out);
        }
        let r = join_of(&out, 1010).expect("b's join completes at the deadline");
        assert_eq!((r.generation, r.leader.as_str()), (2, "b"));
        assert!(!g.members.contains_key("a"));
    }

    #[test]
    fn leave_of_the_last_member_empties_the_group() {
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        let mut out = Vec::new();
        assert_eq!(g.leave("a", None, 5, &mut out), Ok(()));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(out.contains(&Output::Persist));
        assert_eq!(g.leave("a", None, 5, &mut out), Err(E::UnknownMemberId));
        // Now simple (generation -1) commits are allowed.
        assert_eq!(g.check_commit("", None, -1, 6), Ok(()));
    }

    #[test]
    fn unknown_and_unrequested_member_ids_are_refused() {
        let mut g = Group::new("g");
        let mut out = Vec::new();
        g.join(args("made-up", "x"), 1, 0, &L, &mut out);
        assert_eq!(join_of(&out, 1).unwrap().error, E::UnknownMemberId.code());
        let mut bad = args("", "x");
        bad.session_timeout_ms = 10;
        g.join(bad, 2, 0, &L, &mut out);
        assert_eq!(
            join_of(&out, 2).unwrap().error,
            E::InvalidSessionTimeout.code()
        );
        join_new(&mut g, "a", 3, 0);
        let mut other = args("", "b");
        other.protocol_type = "connect".into();
        g.join(other, 4, 0, &L, &mut out);
        assert_eq!(
            join_of(&out, 4).unwrap().error,
            E::InconsistentGroupProtocol.code()
        );
    }

    #[test]
    fn commits_follow_membership_and_generation() {
        let mut g = Group::new("g");
        join_new(&mut g, "a", 1, 0);
        assert_eq!(g.check_commit("a", None, 1, 1), Err(E::RebalanceInProgress));
        let mut out = Vec::new();
        g.sync("a", None, 1, None, None, vec![], 2, 1, &mut out);
        assert_eq!(g.check_commit("a", None, 1, 2), Ok(()));
        assert_eq!(g.check_commit("a", None, 0, 2), Err(E::IllegalGeneration));
        assert_eq!(g.check_commit("b", None, 1, 2), Err(E::UnknownMemberId));
        assert_eq!(g.check_commit("", None, -1, 2), Err(E::IllegalGeneration));
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_and_fences_the_old_id() {
        let mut g = Group::new("g");
        let mut out = Vec::new();
        let mut a = args("", "a1");
        a.instance_id = Some("i-a".into());
        g.join(a.clone(), 1, 0, &L, &mut out);
        assert_eq!(
            join_of(&out, 1).unwrap().error,
            0,
            "static members skip MEMBER_ID_REQUIRED"
        );
        let mut b = args("", "b1");
        b.instance_id = Some("i-b".into());
        let mut out = Vec::new();
        g.join(b.clone(), 2, 0, &L, &mut out);
        g.join(args("a1", "x"), 3, 0, &L, &mut out);
        let mut out = Vec::new();
        g.sync("b1", Some("i-b"), 2, None, None, vec![], 4, 0, &mut out);
        g.sync(
            "a1",
            Some("i-a"),
            2,
            None,
            None,
            vec![
                ("a1".into(), Bytes::from_static(b"A")),
                ("b1".into(), Bytes::from_static(b"B")),
            ],
            5,
            0,
            &mut out,
        );
        assert_eq!(g.state, GroupState::Stable);
        let generation = g.generation;
        // b restarts with no member id: same generation, same assignment.
        let mut out = Vec::new();
        b.new_member_id = "b2".into();
        g.join(b, 6, 10, &L, &mut out);
        let r = join_of(&out, 6).unwrap();
        assert_eq!(
            (r.error, r.generation, r.member_id.as_str()),
            (0, generation, "b2")
        );
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            g.heartbeat("b1", Some("i-b"), generation, 11),
            Err(E::FencedInstanceId)
        );
        let mut out = Vec::new();
        g.sync(
            "b2",
            Some("i-b"),
            generation,
            None,
            None,
            vec![],
            7,
            11,
            &mut out,
        );
        assert_eq!(&sync_of(&out, 7).unwrap().assignment[..], b"B");
    }

    #[test]
    fn initial_delay_holds_the_first_generation() {
        let limits = Limits {
            initial_rebalance_delay_ms: 500,
            ..L
        };
        assert_eq!(limits.offsets_retention_ms, 1_000);
        let mut g = Group::new("g");
        let mut out = Vec::new();
        let mut a = args("", "a");
        a.require_known_member_id = false;
        g.join(a, 1, 0, &limits, &mut out);
        assert!(join_of(&out, 1).is_none());
        g.tick(499, &mut out);
        assert!(join_of(&out, 1).is_none());
        g.tick(500, &mut out);
        assert_eq!(join_of(&out, 1).unwrap().generation, 1);
    }

    #[test]
    fn subscription_topics_parse_and_tolerate_garbage() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["orders", "pay"] {
            m.extend((t.len() as i16).to_be_bytes());
            m.extend(t.as_bytes());
        }
        assert_eq!(subscription_topics(&m), vec!["orders", "pay"]);
        assert!(subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 9]).is_empty());
        assert!(subscription_topics(&[]).is_empty());
    }
}
