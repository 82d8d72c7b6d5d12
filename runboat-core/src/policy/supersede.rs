//! Supersede: once a newer commit of a pull request (or branch) has
//! initialized successfully, the older builds of that pull request (or
//! branch) go.
//!
//! A *group* is the builds of one pull request, or the branch builds of one
//! branch, of one (repo, target branch). With `supersede_keep = K` (K > 0),
//! a build of a group is **superseded** when at least K builds of the group
//! created after it have initialized successfully (init status
//! `succeeded`) and are not undeploying; it is superseded *by* the newest
//! of them. Undeploying and pinned builds are never superseded.
//!
//! "Created after" is the index's order: the Deployment's creation time,
//! which Kubernetes keeps to the second, ties broken by name. Two commits of
//! a group deployed within the same second may so be ordered against their
//! push order; the counting is the same everywhere, so the guarantee below
//! holds in either order.
//!
//! So the newest K successfully initialized builds of a group are never
//! superseded (a failing or still initializing new commit leaves the last
//! good one deployed), and with K = 0 nothing ever is (the original's
//! behaviour).
//!
//! A cap (`supersede_max_builds = C`, C > 0) also supersedes the builds of
//! a group beyond its newest C deployed ones (whatever their init status),
//! except the newest successfully initialized build, which is never taken:
//! by the newest good build, or the group's newest build when there is no
//! good one. K and C are independent; both 0 (the default) is off.

use crate::build::Build;
use crate::index::BuildIndex;
use crate::status::{BuildStatus, InitStatus};

/// The key of a build's group: (repo, target branch, pull request).
pub type GroupKey = (String, String, Option<u64>);

/// The group `build` belongs to.
pub fn group_key(build: &Build) -> GroupKey {
    let c = &build.commit_info;
    (c.repo().to_owned(), c.target_branch().to_owned(), c.pr())
}

fn is_good(b: &Build) -> bool {
    b.init_status == InitStatus::Succeeded && b.status != BuildStatus::Undeploying
}

/// The supersede settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    /// `supersede_keep`: good builds kept per group (0: no such rule).
    pub keep: usize,
    /// `supersede_max_builds`: deployed builds kept per group (0: no cap).
    pub cap: usize,
}

impl Rule {
    /// The rule of `settings`.
    pub fn of(settings: &crate::settings::Settings) -> Rule {
        Rule { keep: settings.supersede_keep, cap: settings.supersede_max_builds }
    }

    /// Whether it supersedes anything at all.
    pub fn is_off(self) -> bool {
        self.keep == 0 && self.cap == 0
    }
}

/// The superseded builds of one group given newest first (as
/// [`BuildIndex::group`] returns it), each with the build superseding it,
/// oldest last. Undeploying builds are skipped (they are going already).
pub fn superseded<'a>(group: &[&'a Build], rule: Rule) -> Vec<(&'a Build, &'a Build)> {
    if rule.is_off() {
        return Vec::new();
    }
    let newest_live = group.iter().find(|b| b.status != BuildStatus::Undeploying);
    let mut newest_good: Option<&Build> = None;
    let mut good = 0usize;
    let mut live = 0usize;
    let mut out = Vec::new();
    for b in group {
        if b.status == BuildStatus::Undeploying {
            continue;
        }
        let by_keep = rule.keep > 0 && good >= rule.keep;
        // The cap never takes the newest good build.
        let by_cap = rule.cap > 0 && live >= rule.cap && !(is_good(b) && good == 0);
        if (by_keep || by_cap)
            && !b.is_pinned()
            && let Some(by) = newest_good.or(newest_live.copied())
        {
            out.push((*b, by));
        }
        live += 1;
        if is_good(b) {
            good += 1;
            newest_good = newest_good.or(Some(*b));
        }
    }
    out
}

/// The name of the build superseding `build` under `rule`, if any (what
/// the API shows as `superseded_by`): looks at `build`'s group in `index`
/// only. An undeploying build (being undeployed because superseded) is
/// judged as it was while deployed.
pub fn superseded_by(index: &BuildIndex, build: &Build, rule: Rule) -> Option<String> {
    if rule.is_off() || build.is_pinned() {
        return None;
    }
    let c = &build.commit_info;
    let mut deployed = build.clone();
    if deployed.status == BuildStatus::Undeploying {
        // Any status but undeploying counts it in its group.
        deployed.status = BuildStatus::Stopped;
    }
    let group: Vec<&Build> = index
        .group(c.repo(), c.target_branch(), c.pr())
        .into_iter()
        .map(|b| if b.name == build.name { &deployed } else { b })
        .collect();
    superseded(&group, rule)
        .into_iter()
        .find(|(b, _)| b.name == build.name)
        .map(|(_, by)| by.name.clone())
}
