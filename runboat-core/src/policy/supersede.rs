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

/// The superseded builds of one group given newest first (as
/// [`BuildIndex::group`] returns it), each with the build superseding it,
/// oldest last.
pub fn superseded<'a>(group: &[&'a Build], keep: usize) -> Vec<(&'a Build, &'a Build)> {
    if keep == 0 {
        return Vec::new();
    }
    let mut newest_good: Option<&Build> = None;
    let mut good = 0usize;
    let mut out = Vec::new();
    for b in group {
        if good >= keep
            && let Some(by) = newest_good
            && b.status != BuildStatus::Undeploying
            && !b.is_pinned()
        {
            out.push((*b, by));
        }
        if is_good(b) {
            good += 1;
            newest_good = newest_good.or(Some(*b));
        }
    }
    out
}

/// The build superseding `build` under `keep`, if any (what the API shows
/// as `superseded_by`): looks at `build`'s group in `index` only.
pub fn superseded_by<'a>(index: &'a BuildIndex, build: &Build, keep: usize) -> Option<&'a Build> {
    // An undeploying build is shown as superseded as well while the
    // builds superseding it are there (it is being undeployed because of
    // them).
    if keep == 0 || build.is_pinned() {
        return None;
    }
    let c = &build.commit_info;
    let group = index.group(c.repo(), c.target_branch(), c.pr());
    let mut newest_good: Option<&Build> = None;
    let mut good = 0usize;
    for b in group {
        if b.name == build.name {
            return if good >= keep { newest_good } else { None };
        }
        if is_good(b) {
            good += 1;
            newest_good = newest_good.or(Some(b));
        }
    }
    None
}
