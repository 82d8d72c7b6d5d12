//! The in-memory database of builds, kept up to date from cluster events.
//!
//! [`BuildIndex`] keeps, next to the builds themselves, ordered sets for
//! every question the controller and the API ask, so that none of them scans
//! all builds: counts per status and init status are counters, "oldest N"
//! queries walk the front of a `BTreeSet<(Timestamp, name)>`, a repo's
//! builds are a range of an ordered set already in the API's sort order.
//!
//! # Definitions
//!
//! - The **newest build of a branch** is, among the *branch builds* (no pull
//!   request) of a (repo, target branch), the one with the latest `created`
//!   (ties broken by the greatest name), whatever its status, as in the
//!   original. Pull request builds are never protected.
//! - Builds are ordered by **last scaled** with `last_scaled` falling back to
//!   `created` when absent (as the original does); ties are broken by name.
//!
//! # Events
//!
//! Every real change emits an [`IndexEvent`] on a bounded tokio broadcast
//! channel; an upsert of an identical build emits nothing. A subscriber that
//! falls more than the channel capacity behind gets `RecvError::Lagged` and
//! should resynchronise from [`BuildIndex::search`]; the index never waits.
//! To get "every build, then live changes" without a gap, subscribe and read
//! the snapshot under the same lock that guards the index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::build::Build;
use crate::commit::CommitInfo;
use crate::settings::Limits;
use crate::status::{BuildStatus, InitStatus};

/// Default capacity of the event channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// A change of the index, as sent to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEvent {
    /// A build was added or changed (the new value).
    Upd(Build),
    /// A build was removed (its last value).
    Del(Build),
}

impl IndexEvent {
    /// The SSE event name: `upd` or `del`.
    pub fn kind(&self) -> &'static str {
        match self {
            IndexEvent::Upd(_) => "upd",
            IndexEvent::Del(_) => "del",
        }
    }

    /// The build concerned.
    pub fn build(&self) -> &Build {
        match self {
            IndexEvent::Upd(b) | IndexEvent::Del(b) => b,
        }
    }
}

impl IndexEvent {
    /// The SSE payload of SPEC: `{"event": "upd"|"del", "build": {...}}`,
    /// the build as [`Build::view`] shows it.
    pub fn to_json(&self, build_domain: &str, base_url: &str) -> serde_json::Value {
        serde_json::json!({
            "event": self.kind(),
            "build": self.build().to_json(build_domain, base_url),
        })
    }
}

/// The counters of `GET /api/v1/status`, with SPEC's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Builds not undeploying.
    pub deployed: usize,
    /// The `max_deployed` limit.
    pub max_deployed: usize,
    /// Builds whose initialization failed.
    pub failed: usize,
    /// Stopped builds.
    pub stopped: usize,
    /// Started builds.
    pub started: usize,
    /// The `max_started` limit.
    pub max_started: usize,
    /// Builds waiting for initialization (init status `todo`).
    pub to_initialize: usize,
    /// Builds whose initialization job runs (init status `started`).
    pub initializing: usize,
    /// The `max_initializing` limit.
    pub max_initializing: usize,
    /// Builds being undeployed.
    pub undeploying: usize,
    /// Pinned builds (counted in the other counters too).
    pub pinned: usize,
    /// The `max_pinned` limit.
    pub max_pinned: usize,
}

/// The filters of the API's build searches; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilters {
    /// Repository (`owner/name`, compared case-insensitively).
    pub repo: Option<String>,
    /// Target branch, of branch and pull request builds alike.
    pub target_branch: Option<String>,
    /// Target branch, branch builds only (no pull request).
    pub branch: Option<String>,
    /// Pull request number.
    pub pr: Option<u64>,
    /// Build name.
    pub name: Option<String>,
    /// Status.
    pub status: Option<BuildStatus>,
}

impl SearchFilters {
    /// True when `build` passes every filter that is set.
    pub fn matches(&self, build: &Build) -> bool {
        let c = &build.commit_info;
        self.repo.as_deref().is_none_or(|r| r.eq_ignore_ascii_case(c.repo()))
            && self.target_branch.as_deref().is_none_or(|b| b == c.target_branch())
            && self.branch.as_deref().is_none_or(|b| b == c.target_branch() && c.pr().is_none())
            && self.pr.is_none_or(|pr| c.pr() == Some(pr))
            && self.name.as_deref().is_none_or(|n| n == build.name)
            && self.status.is_none_or(|s| s == build.status)
    }
}

/// The two sort orders of the original's search. Both group builds per
/// repo, then per pull request (ascending number, branch builds after all
/// pull requests), then per target branch, then by creation time; ties by
/// name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Exactly the reverse of [`SortOrder::Asc`]: repos Z→A, branch builds
    /// first, then pull requests newest number first, newest build first.
    #[default]
    Desc,
    /// Repos A→Z, pull requests by ascending number then branch builds,
    /// oldest build first.
    Asc,
}

type Name = Arc<str>;
type Keyed = (Timestamp, Name);

/// Position of a build within its repo in the search order.
type RepoOrderKey = (u64, String, Timestamp, Name);

fn repo_order_key(build: &Build, name: &Name) -> RepoOrderKey {
    let c = &build.commit_info;
    // Branch builds sort after every pull request, as the original's
    // COALESCE(pr, 999999) intends.
    (c.pr().unwrap_or(u64::MAX), c.target_branch().to_owned(), build.created, name.clone())
}

#[derive(Debug)]
struct Entry {
    /// The shared name, the key of every ordered set.
    name: Name,
    build: Build,
    /// Changes whenever `build` does (see [`BuildIndex::revision`]).
    rev: u64,
    /// Whether the build is in `evictable` (membership depends on other
    /// builds of the branch, so it is tracked explicitly).
    evictable: bool,
}

/// Everything derived from the builds, kept apart from `entries` so both
/// can be borrowed at once.
#[derive(Debug, Default)]
struct Derived {
    /// (hash of the commit identity, name): a cheap key; lookups compare
    /// the commit infos, so hash collisions are harmless.
    by_commit: BTreeSet<(u64, Name)>,
    status_counts: [usize; 7],
    init_counts: [usize; 4],
    /// Init status `todo` and not undeploying, by created.
    todo: BTreeSet<Keyed>,
    /// Status `started` and not pinned, by last scaled.
    started: BTreeSet<Keyed>,
    /// Stopped, stopping or failed, not pinned and not the newest of its
    /// branch, by last scaled.
    evictable: BTreeSet<Keyed>,
    /// Pinned builds, undeploying ones included.
    pinned: usize,
    /// Build name by slug (the host a build is served at), for the wake
    /// page. Slugs are not unique in theory (the sha is cut to 12 digits);
    /// the smallest name wins.
    by_slug: BTreeSet<(String, Name)>,
    /// Status `undeploying`, by created.
    undeploying: BTreeSet<Keyed>,
    /// Branch builds per repo and target branch, by created.
    branches: HashMap<String, HashMap<String, BTreeSet<Keyed>>>,
    /// Builds per repo in search order.
    repos: BTreeMap<String, BTreeSet<RepoOrderKey>>,
}

/// The in-memory database of builds. See the [module docs](self).
///
/// Not synchronised: wrap it in a lock. All queries return builds in a
/// deterministic order.
#[derive(Debug)]
pub struct BuildIndex {
    entries: HashMap<Name, Entry>,
    derived: Derived,
    events: broadcast::Sender<IndexEvent>,
    /// The last revision given to a build.
    last_rev: u64,
}

impl Default for BuildIndex {
    fn default() -> Self {
        BuildIndex::new()
    }
}

/// Revisions are drawn from one counter for the whole process, so they
/// are unique even across indexes: a cache that outlives an index (one
/// replaced by another) can never take a revision of the new one for a
/// revision of the old one.
static REVISIONS: AtomicU64 = AtomicU64::new(0);

fn next_revision() -> u64 {
    REVISIONS.fetch_add(1, Ordering::Relaxed) + 1
}

/// A fixed-key hash of a commit identity (deterministic across runs).
fn commit_hash(commit: &CommitInfo) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    commit.hash(&mut h);
    h.finish()
}

fn is_todo(b: &Build) -> bool {
    b.init_status == InitStatus::Todo && b.status != BuildStatus::Undeploying
}

/// True when two versions of a build sit at the same place in the
/// identity-based structures (commit lookup, branch, search order).
fn same_place(a: &Build, b: &Build) -> bool {
    a.created == b.created && a.commit_info == b.commit_info
}

impl Derived {
    fn newest_name(&self, repo: &str, target_branch: &str) -> Option<&Name> {
        self.branches.get(repo)?.get(target_branch)?.last().map(|(_, n)| n)
    }

    fn newest_of(&self, build: &Build) -> Option<Name> {
        if build.is_branch() {
            self.newest_name(build.commit_info.repo(), build.commit_info.target_branch()).cloned()
        } else {
            None
        }
    }

    fn is_newest(&self, build: &Build) -> bool {
        build.is_branch()
            && self
                .newest_name(build.commit_info.repo(), build.commit_info.target_branch())
                .is_some_and(|n| **n == *build.name)
    }

    /// Puts `entry` in `evictable` or takes it out, as its status and the
    /// newest build of its branch say.
    fn sync_evictable(&mut self, entry: &mut Entry) {
        let should = entry.build.status.is_evictable()
            && !entry.build.pinned
            && !self.is_newest(&entry.build);
        if should != entry.evictable {
            let key = (entry.build.last_scaled_or_created(), entry.name.clone());
            if should {
                self.evictable.insert(key);
            } else {
                self.evictable.remove(&key);
            }
            entry.evictable = should;
        }
    }

    fn drop_evictable(&mut self, entry: &mut Entry) {
        if entry.evictable {
            self.evictable.remove(&(entry.build.last_scaled_or_created(), entry.name.clone()));
            entry.evictable = false;
        }
    }

    /// Adds what depends on the build's state (status, init status, last
    /// scaled), except `evictable`.
    fn index_state(&mut self, name: &Name, b: &Build) {
        self.status_counts[b.status.index()] += 1;
        self.init_counts[b.init_status.index()] += 1;
        if b.pinned {
            self.pinned += 1;
        }
        if is_todo(b) {
            self.todo.insert((b.created, name.clone()));
        }
        match b.status {
            BuildStatus::Started if !b.pinned => {
                self.started.insert((b.last_scaled_or_created(), name.clone()));
            }
            BuildStatus::Undeploying => {
                self.undeploying.insert((b.created, name.clone()));
            }
            _ => {}
        }
    }

    fn unindex_state(&mut self, name: &Name, b: &Build) {
        self.status_counts[b.status.index()] -= 1;
        self.init_counts[b.init_status.index()] -= 1;
        if b.pinned {
            self.pinned -= 1;
        }
        if is_todo(b) {
            self.todo.remove(&(b.created, name.clone()));
        }
        match b.status {
            BuildStatus::Started if !b.pinned => {
                self.started.remove(&(b.last_scaled_or_created(), name.clone()));
            }
            BuildStatus::Undeploying => {
                self.undeploying.remove(&(b.created, name.clone()));
            }
            _ => {}
        }
    }

    /// Adds what depends on the build's identity (commit, creation time).
    fn index_place(&mut self, name: &Name, b: &Build) {
        let c = &b.commit_info;
        self.by_commit.insert((commit_hash(c), name.clone()));
        self.by_slug.insert((c.slug(), name.clone()));
        if c.is_branch() {
            let branches = match self.branches.get_mut(c.repo()) {
                Some(branches) => branches,
                None => self.branches.entry(c.repo().to_owned()).or_default(),
            };
            let set = match branches.get_mut(c.target_branch()) {
                Some(set) => set,
                None => branches.entry(c.target_branch().to_owned()).or_default(),
            };
            set.insert((b.created, name.clone()));
        }
        let set = match self.repos.get_mut(c.repo()) {
            Some(set) => set,
            None => self.repos.entry(c.repo().to_owned()).or_default(),
        };
        set.insert(repo_order_key(b, name));
    }

    fn unindex_place(&mut self, name: &Name, b: &Build) {
        let c = &b.commit_info;
        self.by_commit.remove(&(commit_hash(c), name.clone()));
        self.by_slug.remove(&(c.slug(), name.clone()));
        if c.is_branch()
            && let Some(branches) = self.branches.get_mut(c.repo())
        {
            if let Some(set) = branches.get_mut(c.target_branch()) {
                set.remove(&(b.created, name.clone()));
                if set.is_empty() {
                    branches.remove(c.target_branch());
                }
            }
            if branches.is_empty() {
                self.branches.remove(c.repo());
            }
        }
        if let Some(set) = self.repos.get_mut(c.repo()) {
            set.remove(&repo_order_key(b, name));
            if set.is_empty() {
                self.repos.remove(c.repo());
            }
        }
    }
}

impl BuildIndex {
    /// An empty index with an event channel of [`DEFAULT_EVENT_CAPACITY`].
    pub fn new() -> Self {
        BuildIndex::with_event_capacity(DEFAULT_EVENT_CAPACITY)
    }

    /// An empty index whose event channel holds `capacity` events (at least
    /// 1) before slow subscribers lag.
    pub fn with_event_capacity(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.clamp(1, usize::MAX / 4));
        BuildIndex {
            entries: HashMap::new(),
            derived: Derived::default(),
            events,
            last_rev: next_revision(),
        }
    }

    /// Subscribes to the changes made from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<IndexEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: impl FnOnce() -> IndexEvent) {
        if self.events.receiver_count() > 0 {
            // An error only means every receiver is gone meanwhile.
            let _ = self.events.send(event());
        }
    }

    /// Adds or replaces the build named `build.name`. Returns whether
    /// anything changed; only a change emits an [`IndexEvent::Upd`].
    pub fn upsert(&mut self, build: Build) -> bool {
        if self.entries.get(build.name.as_str()).is_some_and(|e| e.build == build) {
            return false;
        }
        let name = build.name.clone();
        self.apply(&name, Some(build));
        if let Some(entry) = self.entries.get(name.as_str()) {
            self.emit(|| IndexEvent::Upd(entry.build.clone()));
        }
        true
    }

    /// Removes the build `name`, returning it; emits [`IndexEvent::Del`]
    /// when it was there.
    pub fn remove(&mut self, name: &str) -> Option<Build> {
        if !self.entries.contains_key(name) {
            return None;
        }
        let old = self.apply(name, None);
        if let Some(old) = &old {
            self.emit(|| IndexEvent::Del(old.clone()));
        }
        old
    }

    /// Replaces the whole content by `builds` (a full relisting of the
    /// cluster): emits `del` for builds that vanished and `upd` for new or
    /// changed ones only. If a name appears twice, the last one wins.
    pub fn replace_all(&mut self, builds: impl IntoIterator<Item = Build>) {
        let mut fresh: HashMap<String, Build> = HashMap::new();
        for b in builds {
            fresh.insert(b.name.clone(), b);
        }
        let vanished: Vec<Name> =
            self.entries.keys().filter(|n| !fresh.contains_key(&***n)).cloned().collect();
        for name in vanished {
            self.remove(&name);
        }
        let mut fresh: Vec<Build> = fresh.into_values().collect();
        // Deterministic event order.
        fresh.sort_by(|a, b| a.name.cmp(&b.name));
        for b in fresh {
            self.upsert(b);
        }
    }

    /// The build named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Build> {
        self.entries.get(name).map(|e| &e.build)
    }

    /// The index's version: the last revision it gave (or one of its own
    /// when new), so it changes whenever any build is added, changed or
    /// removed, and no two indexes share one (an answer computed from the
    /// index stays right while the version is the same).
    pub fn version(&self) -> u64 {
        self.last_rev
    }

    /// The revision of the build `name`: a number given anew (increasing,
    /// never reused in the process) each time the build is added or
    /// changed, so a cache of anything derived from a build (its JSON,
    /// say) is valid while the revision it was made from is current.
    pub fn revision(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| e.rev)
    }

    /// The build of this exact commit identity (repo, target branch, pr,
    /// sha), if any. Should several exist (the original's random names made
    /// duplicates possible), the one with the smallest name.
    pub fn get_by_commit(&self, commit: &CommitInfo) -> Option<&Build> {
        let digest = commit_hash(commit);
        self.derived
            .by_commit
            .range((digest, Arc::<str>::from(""))..)
            .take_while(|(d, _)| *d == digest)
            .filter_map(|(_, n)| self.get(n))
            .find(|b| &b.commit_info == commit)
    }

    /// Number of builds (undeploying ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no build.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All builds, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Build> {
        self.entries.values().map(|e| &e.build)
    }

    /// Number of builds with `status`, in O(1).
    pub fn count_by_status(&self, status: BuildStatus) -> usize {
        self.derived.status_counts[status.index()]
    }

    /// Number of builds with `init_status`, in O(1).
    pub fn count_by_init_status(&self, init_status: InitStatus) -> usize {
        self.derived.init_counts[init_status.index()]
    }

    /// The counters of the status endpoint, in O(1).
    pub fn status_counts(&self, limits: &Limits) -> StatusCounts {
        StatusCounts {
            deployed: self.count_deployed(),
            max_deployed: limits.max_deployed,
            failed: self.count_by_status(BuildStatus::Failed),
            stopped: self.count_by_status(BuildStatus::Stopped),
            started: self.count_by_status(BuildStatus::Started),
            max_started: limits.max_started,
            to_initialize: self.count_by_init_status(InitStatus::Todo),
            initializing: self.count_by_init_status(InitStatus::Started),
            max_initializing: limits.max_initializing,
            undeploying: self.count_by_status(BuildStatus::Undeploying),
            pinned: self.count_pinned(),
            max_pinned: limits.max_pinned,
        }
    }

    /// Number of pinned builds (undeploying ones included), in O(1).
    pub fn count_pinned(&self) -> usize {
        self.derived.pinned
    }

    /// True when the build `name` exists and is pinned (what a policy that
    /// stops or undeploys builds must respect).
    pub fn is_pinned(&self, name: &str) -> bool {
        self.get(name).is_some_and(|b| b.pinned)
    }

    /// The build served at `<slug>.<build_domain>`, if any (should two
    /// builds share a slug, the one with the smallest name).
    pub fn get_by_slug(&self, slug: &str) -> Option<&Build> {
        self.derived
            .by_slug
            .range((slug.to_owned(), Arc::<str>::from(""))..)
            .next()
            .filter(|(s, _)| s == slug)
            .and_then(|(_, n)| self.get(n))
    }

    /// Number of deployed builds: all but the undeploying ones.
    pub fn count_deployed(&self) -> usize {
        self.len() - self.count_by_status(BuildStatus::Undeploying)
    }

    /// Up to `limit` builds waiting for initialization (init status `todo`,
    /// not undeploying), oldest created first.
    pub fn to_initialize(&self, limit: usize) -> Vec<&Build> {
        self.resolve(self.derived.todo.iter(), limit)
    }

    /// How many builds waiting for initialization come before `build` (at
    /// most `limit`: the walk is that long).
    pub fn todo_ahead(&self, build: &Build, limit: usize) -> usize {
        let key: Keyed = (build.created, Name::from(build.name.as_str()));
        self.derived.todo.range(..key).take(limit).count()
    }

    /// Up to `limit` started builds that are not pinned, oldest last
    /// scaled first.
    pub fn oldest_started(&self, limit: usize) -> Vec<&Build> {
        self.resolve(self.derived.started.iter(), limit)
    }

    /// Up to `limit` stopped, stopping or failed builds, oldest last scaled
    /// first, never a pinned build nor the newest build of a branch.
    pub fn oldest_stopped(&self, limit: usize) -> Vec<&Build> {
        self.resolve(self.derived.evictable.iter(), limit)
    }

    /// Undeploying builds, oldest created first.
    pub fn to_cleanup(&self) -> Vec<&Build> {
        self.resolve(self.derived.undeploying.iter(), usize::MAX)
    }

    /// The newest branch build of (repo, target branch), if any.
    pub fn newest_of_branch(&self, repo: &str, target_branch: &str) -> Option<&Build> {
        self.derived.newest_name(repo, target_branch).and_then(|n| self.get(n))
    }

    /// True when `build` is the newest build of its branch (always false for
    /// pull request builds).
    pub fn is_newest_of_branch(&self, build: &Build) -> bool {
        self.derived.is_newest(build)
    }

    /// The builds of one pull request (`pr` set) or of one branch's branch
    /// builds (`pr` `None`) of (repo, target branch), newest created first
    /// (ties: greatest name first). A range of the search order: no scan.
    pub fn group(&self, repo: &str, target_branch: &str, pr: Option<u64>) -> Vec<&Build> {
        let Some(set) = self.derived.repos.get(repo) else { return Vec::new() };
        let p = pr.unwrap_or(u64::MAX);
        let from: RepoOrderKey = (p, target_branch.to_owned(), Timestamp::MIN, Arc::from(""));
        let mut found: Vec<&Build> = set
            .range(from..)
            .take_while(|(kp, tb, _, _)| *kp == p && tb == target_branch)
            .filter_map(|(_, _, _, n)| self.get(n))
            .collect();
        found.reverse();
        found
    }

    /// The builds passing `filters`, in `order`. A name filter is a direct
    /// lookup; a repo filter narrows the walk to that repo's builds.
    pub fn search(&self, filters: &SearchFilters, order: SortOrder) -> Vec<&Build> {
        self.search_entries(filters, order).into_iter().map(|e| &e.build).collect()
    }

    /// [`BuildIndex::search`], each build with its [`BuildIndex::revision`].
    pub fn search_with_revisions(
        &self,
        filters: &SearchFilters,
        order: SortOrder,
    ) -> Vec<(&Build, u64)> {
        self.search_entries(filters, order).into_iter().map(|e| (&e.build, e.rev)).collect()
    }

    fn search_entries(&self, filters: &SearchFilters, order: SortOrder) -> Vec<&Entry> {
        if let Some(name) = &filters.name {
            return self
                .entries
                .get(name.as_str())
                .filter(|e| filters.matches(&e.build))
                .into_iter()
                .collect();
        }
        let repos: Box<dyn DoubleEndedIterator<Item = &BTreeSet<RepoOrderKey>>> = match &filters
            .repo
        {
            Some(repo) => Box::new(self.derived.repos.get(&repo.to_ascii_lowercase()).into_iter()),
            None => Box::new(self.derived.repos.values()),
        };
        let keys: Box<dyn Iterator<Item = &RepoOrderKey>> = match order {
            SortOrder::Asc => Box::new(repos.flat_map(|set| set.iter())),
            SortOrder::Desc => Box::new(repos.rev().flat_map(|set| set.iter().rev())),
        };
        keys.filter_map(|(_, _, _, name)| self.entries.get(&**name))
            .filter(|e| filters.matches(&e.build))
            .collect()
    }

    /// The repos having at least one build, sorted.
    pub fn repos(&self) -> Vec<&str> {
        self.derived.repos.keys().map(String::as_str).collect()
    }

    fn resolve<'a>(
        &'a self,
        keys: impl Iterator<Item = &'a Keyed>,
        limit: usize,
    ) -> Vec<&'a Build> {
        keys.take(limit).filter_map(|(_, n)| self.get(n)).collect()
    }

    /// Replaces the build `name` by `new` (or removes it), keeping every
    /// derived structure in step. Returns the previous build.
    fn apply(&mut self, name: &str, new: Option<Build>) -> Option<Build> {
        let rev = next_revision();
        self.last_rev = rev;
        let d = &mut self.derived;
        // Fast path: a build changing state only (the common case: scaled,
        // initialized…) keeps its place; its branch's newest build cannot
        // change, so only its own state structures move.
        if let (Some(nb), Some(entry)) = (&new, self.entries.get_mut(name))
            && same_place(&entry.build, nb)
            && let Some(nb) = new
        {
            let key = entry.name.clone();
            d.drop_evictable(entry);
            d.unindex_state(&key, &entry.build);
            d.index_state(&key, &nb);
            let old = std::mem::replace(&mut entry.build, nb);
            entry.rev = rev;
            d.sync_evictable(entry);
            return Some(old);
        }
        // Builds whose "newest of branch" protection may change: the newest
        // of the affected branches before and after, and the build itself.
        let mut candidates: Vec<Name> = Vec::with_capacity(5);
        if let Some(e) = self.entries.get(name) {
            candidates.extend(d.newest_of(&e.build));
        }
        if let Some(b) = &new {
            candidates.extend(d.newest_of(b));
        }
        let old = self.entries.remove(name).map(|mut e| {
            d.drop_evictable(&mut e);
            d.unindex_state(&e.name, &e.build);
            d.unindex_place(&e.name, &e.build);
            e.build
        });
        if let Some(build) = new {
            let key: Name = Arc::from(build.name.as_str());
            d.index_state(&key, &build);
            d.index_place(&key, &build);
            candidates.extend(d.newest_of(&build));
            candidates.push(key.clone());
            self.entries.insert(key.clone(), Entry { name: key, build, rev, evictable: false });
        }
        if let Some(old) = &old {
            candidates.extend(d.newest_of(old));
        }
        for c in candidates {
            if let Some(entry) = self.entries.get_mut(&*c) {
                d.sync_evictable(entry);
            }
        }
        old
    }
}

#[cfg(test)]
mod tests;
