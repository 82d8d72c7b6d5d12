//! The runboat Jobs the controller knows of, by name and by build.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::cluster::{JobFacts, JobKind, JobPhase};

/// Every runboat Job seen in the Job watch, indexed by build. Plain data:
/// the loop feeds it the Job events, the step reads it.
#[derive(Debug, Default, Clone)]
pub struct JobTable {
    /// Every Job by name.
    jobs: HashMap<String, JobFacts>,
    /// Job names per build.
    by_build: HashMap<String, BTreeSet<String>>,
    /// Builds with a pending or running (not deleting) init Job.
    active_init: HashSet<String>,
}

/// Priority of job phases when a build has several jobs of a kind: a
/// definite outcome wins.
fn phase_rank(phase: JobPhase) -> u8 {
    match phase {
        JobPhase::Succeeded => 3,
        JobPhase::Failed => 2,
        JobPhase::Running => 1,
        JobPhase::Pending => 0,
    }
}

impl JobTable {
    /// An empty table.
    pub fn new() -> JobTable {
        JobTable::default()
    }

    /// Records `job` (new or changed); returns the builds it touched (its
    /// own, and its previous one if its label changed).
    pub fn insert(&mut self, job: JobFacts) -> Vec<String> {
        let name = job.name.clone();
        let build = job.build_name.clone();
        let mut touched = Vec::with_capacity(1);
        if let Some(old) = self.jobs.insert(name.clone(), job)
            && old.build_name != build
        {
            self.unlink(&old.build_name, &name);
            self.refresh_active_init(&old.build_name);
            touched.push(old.build_name);
        }
        self.by_build.entry(build.clone()).or_default().insert(name);
        self.refresh_active_init(&build);
        touched.push(build);
        touched
    }

    /// The builds that have Jobs (a new leader looks at each of them).
    pub fn builds(&self) -> impl Iterator<Item = &str> {
        self.by_build.keys().map(String::as_str)
    }

    /// Forgets the Job `name`; returns its build if it was known.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let old = self.jobs.remove(name)?;
        self.unlink(&old.build_name, name);
        self.refresh_active_init(&old.build_name);
        Some(old.build_name)
    }

    /// Replaces everything with a full listing; returns every build that had
    /// or has a Job.
    pub fn replace_all(&mut self, jobs: impl IntoIterator<Item = JobFacts>) -> BTreeSet<String> {
        let mut touched: BTreeSet<String> = self.by_build.keys().cloned().collect();
        self.jobs.clear();
        self.by_build.clear();
        self.active_init.clear();
        for job in jobs {
            touched.extend(self.insert(job));
        }
        touched
    }

    fn unlink(&mut self, build: &str, name: &str) {
        if let Some(set) = self.by_build.get_mut(build) {
            set.remove(name);
            if set.is_empty() {
                self.by_build.remove(build);
            }
        }
    }

    fn refresh_active_init(&mut self, build: &str) {
        if self.live(build, Some(JobKind::Initialize)).any(|j| j.phase.is_active()) {
            self.active_init.insert(build.to_owned());
        } else {
            self.active_init.remove(build);
        }
    }

    /// Every Job of `build`, deleting ones included.
    pub fn all(&self, build: &str) -> impl Iterator<Item = &JobFacts> + '_ {
        self.by_build.get(build).into_iter().flatten().filter_map(|n| self.jobs.get(n))
    }

    /// The live (not deleting) Jobs of `build`, of `kind` if given.
    pub fn live(&self, build: &str, kind: Option<JobKind>) -> impl Iterator<Item = &JobFacts> + '_ {
        self.all(build).filter(move |j| !j.deleting && kind.is_none_or(|k| j.kind == k))
    }

    /// True when `build` has a live Job of `kind`.
    pub fn has_live(&self, build: &str, kind: JobKind) -> bool {
        self.live(build, Some(kind)).next().is_some()
    }

    /// The most telling phase among the live Jobs of `kind` of `build`
    /// (succeeded, then failed, running, pending).
    pub fn phase(&self, build: &str, kind: JobKind) -> Option<JobPhase> {
        self.live(build, Some(kind)).map(|j| j.phase).max_by_key(|p| phase_rank(*p))
    }

    /// Builds with a pending or running init Job.
    pub fn active_init(&self) -> impl Iterator<Item = &str> {
        self.active_init.iter().map(String::as_str)
    }

    /// True when `build` has a pending or running init Job.
    pub fn is_initializing(&self, build: &str) -> bool {
        self.active_init.contains(build)
    }

    /// How many Jobs are known.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when no Job is known.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, build: &str, kind: JobKind, phase: JobPhase) -> JobFacts {
        JobFacts {
            name: name.into(),
            build_name: build.into(),
            kind,
            phase,
            deleting: false,
            started: None,
            finished: None,
        }
    }

    #[test]
    fn tracks_jobs_per_build_and_active_init_jobs() {
        let mut t = JobTable::new();
        assert_eq!(t.insert(job("j1", "b1", JobKind::Initialize, JobPhase::Running)), ["b1"]);
        assert!(t.is_initializing("b1"));
        t.insert(job("j2", "b1", JobKind::Initialize, JobPhase::Failed));
        assert_eq!(t.phase("b1", JobKind::Initialize), Some(JobPhase::Failed));
        // Relabelled to another build: both builds are touched.
        assert_eq!(t.insert(job("j1", "b2", JobKind::Initialize, JobPhase::Running)), ["b1", "b2"]);
        assert!(!t.is_initializing("b1") && t.is_initializing("b2"));
        let mut deleting = job("j2", "b1", JobKind::Initialize, JobPhase::Failed);
        deleting.deleting = true;
        t.insert(deleting);
        assert_eq!(t.phase("b1", JobKind::Initialize), None);
        assert_eq!(t.all("b1").count(), 1);
        assert_eq!(t.remove("j2").as_deref(), Some("b1"));
        assert_eq!(t.remove("j2"), None);
        let touched = t.replace_all([job("j3", "b3", JobKind::Cleanup, JobPhase::Succeeded)]);
        assert_eq!(touched.into_iter().collect::<Vec<_>>(), ["b2", "b3"]);
        assert_eq!(t.len(), 1);
        assert!(t.active_init().next().is_none());
    }
}
