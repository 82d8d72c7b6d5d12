//! Builders and proptest strategies shared by the unit tests.

use jiff::Timestamp;
use proptest::prelude::*;

use crate::build::Build;
use crate::commit::CommitInfo;
use crate::status::{BuildStatus, InitStatus};

/// A timestamp `secs` seconds after 2024-01-01.
pub(crate) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_704_067_200 + secs).expect("in range")
}

/// A build with a derived-consistent status.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) repo: String,
    pub(crate) branch: String,
    pub(crate) pr: Option<u64>,
    pub(crate) sha: u8,
    pub(crate) init: InitStatus,
    pub(crate) status: BuildStatus,
    pub(crate) created: i64,
    pub(crate) last_scaled: Option<i64>,
    pub(crate) pinned: bool,
}

impl Spec {
    pub(crate) fn new(name: &str, status: BuildStatus) -> Spec {
        let init = match status {
            BuildStatus::Initializing => InitStatus::Todo,
            BuildStatus::Failed => InitStatus::Failed,
            _ => InitStatus::Succeeded,
        };
        Spec {
            name: name.to_owned(),
            repo: "oca/x".to_owned(),
            branch: "16.0".to_owned(),
            pr: None,
            sha: 0,
            init,
            status,
            created: 0,
            last_scaled: None,
            pinned: false,
        }
    }

    pub(crate) fn build(&self) -> Build {
        let sha = format!("{:02x}", self.sha).repeat(20);
        let commit_info =
            CommitInfo::new(&self.repo, &self.branch, self.pr, &sha).expect("valid commit");
        Build {
            name: self.name.clone(),
            deployment_name: self.name.clone(),
            commit_info,
            status: self.status,
            init_status: self.init,
            desired_replicas: i32::from(self.status == BuildStatus::Started),
            created: ts(self.created),
            last_scaled: self.last_scaled.map(ts),
            pinned: self.pinned,
            route: None,
        }
    }
}

/// A coherent (init status, status) pair: the status as derived from some
/// Deployment with that init status.
pub(crate) fn arb_states() -> impl Strategy<Value = (InitStatus, BuildStatus)> {
    (
        prop::sample::select(InitStatus::ALL.to_vec()),
        prop::bool::weighted(0.1),
        0..2i32,
        prop::option::of(0..2i32),
        prop::option::of(0..2i32),
    )
        .prop_map(|(init, deleting, spec, st, av)| {
            (init, BuildStatus::derive(init, deleting, Some(spec), st, av))
        })
}

/// Builds drawn from small pools so names, branches and timestamps collide.
pub(crate) fn arb_build(names: usize) -> impl Strategy<Value = Build> {
    (
        0..names,
        prop::sample::select(vec!["oca/a", "oca/b", "acsone/c"]),
        prop::sample::select(vec!["16.0", "17.0"]),
        prop::option::of(1..4u64),
        0..3u8,
        arb_states(),
        0..20i64,
        prop::option::of(0..20i64),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(n, repo, branch, pr, sha, (init, status), created, last_scaled, pinned)| {
                Spec {
                    name: format!("b{n}"),
                    repo: repo.to_owned(),
                    branch: branch.to_owned(),
                    pr,
                    sha,
                    init,
                    status,
                    created,
                    last_scaled,
                    pinned,
                }
                .build()
            },
        )
}

/// The reference model of the index: a `Vec` scanned linearly.
#[derive(Debug, Default, Clone)]
pub(crate) struct Model {
    pub(crate) builds: Vec<Build>,
}

impl Model {
    /// Returns whether anything changed.
    pub(crate) fn upsert(&mut self, b: Build) -> bool {
        match self.builds.iter_mut().find(|x| x.name == b.name) {
            Some(x) if *x == b => false,
            Some(x) => {
                *x = b;
                true
            }
            None => {
                self.builds.push(b);
                true
            }
        }
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Build> {
        let pos = self.builds.iter().position(|b| b.name == name)?;
        Some(self.builds.remove(pos))
    }

    pub(crate) fn newest_of_branch(&self, repo: &str, branch: &str) -> Option<&Build> {
        self.builds
            .iter()
            .filter(|b| {
                b.is_branch()
                    && b.commit_info.repo() == repo
                    && b.commit_info.target_branch() == branch
            })
            .max_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)))
    }

    pub(crate) fn is_newest(&self, b: &Build) -> bool {
        b.is_branch()
            && self
                .newest_of_branch(b.commit_info.repo(), b.commit_info.target_branch())
                .is_some_and(|n| n.name == b.name)
    }

    fn sorted_by<K: Ord>(
        &self,
        keep: impl Fn(&Build) -> bool,
        key: impl Fn(&Build) -> K,
    ) -> Vec<&Build> {
        let mut v: Vec<&Build> = self.builds.iter().filter(|b| keep(b)).collect();
        v.sort_by(|a, b| (key(a), &a.name).cmp(&(key(b), &b.name)));
        v
    }

    pub(crate) fn to_initialize(&self) -> Vec<&Build> {
        self.sorted_by(
            |b| b.init_status == InitStatus::Todo && b.status != BuildStatus::Undeploying,
            |b| b.created,
        )
    }

    pub(crate) fn oldest_started(&self) -> Vec<&Build> {
        self.sorted_by(
            |b| b.status == BuildStatus::Started && !b.pinned,
            Build::last_scaled_or_created,
        )
    }

    pub(crate) fn oldest_stopped(&self) -> Vec<&Build> {
        self.sorted_by(
            |b| {
                matches!(
                    b.status,
                    BuildStatus::Stopped | BuildStatus::Stopping | BuildStatus::Failed
                ) && !b.pinned
                    && !self.is_newest(b)
            },
            Build::last_scaled_or_created,
        )
    }

    pub(crate) fn to_cleanup(&self) -> Vec<&Build> {
        self.sorted_by(|b| b.status == BuildStatus::Undeploying, |b| b.created)
    }

    pub(crate) fn count(&self, status: BuildStatus) -> usize {
        self.builds.iter().filter(|b| b.status == status).count()
    }

    pub(crate) fn count_init(&self, init: InitStatus) -> usize {
        self.builds.iter().filter(|b| b.init_status == init).count()
    }

    pub(crate) fn count_pinned(&self) -> usize {
        self.builds.iter().filter(|b| b.pinned).count()
    }

    pub(crate) fn deployed(&self) -> usize {
        self.builds.len() - self.count(BuildStatus::Undeploying)
    }
}
