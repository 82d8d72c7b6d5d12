//! [`check_cluster_contract`]: the behaviour every [`Cluster`]
//! implementation must have, as one reusable check. The sim passes it (see
//! the tests below); runboat-k8s can run it against kubesim or a real
//! cluster to show its implementation does what the controller relies on.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};

use crate::cluster::{Cluster, ClusterEvent, JobFacts, JobKind, KubefilesMode};
use crate::commit::CommitInfo;
use crate::contract::{ANNOTATION_INIT_STATUS, ANNOTATION_LAST_SCALED, LABEL_BUILD};
use crate::status::{DeploymentFacts, InitStatus};

fn is_build(facts: &DeploymentFacts, build: &str) -> bool {
    facts.labels.get(LABEL_BUILD).is_some_and(|b| b == build)
}

/// Waits for an event on `stream` satisfying `pred` (a `Relisted` counts
/// when one of its items does).
async fn wait_for<T>(
    stream: &mut BoxStream<'static, ClusterEvent<T>>,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&ClusterEvent<T>, &T) -> bool,
) -> Result<(), String> {
    let search = async {
        while let Some(event) = stream.next().await {
            let hit = match &event {
                ClusterEvent::Relisted(items) => items.iter().any(|i| pred(&event, i)),
                ClusterEvent::Applied(i) | ClusterEvent::Deleted(i) => pred(&event, i),
            };
            if hit {
                return Ok(());
            }
        }
        Err(format!("stream ended while waiting for {what}"))
    };
    tokio::time::timeout(timeout, search)
        .await
        .map_err(|_| format!("no event within {timeout:?}: {what}"))?
}

/// Runs the lifecycle of one build (`commit`, which must not be deployed
/// yet and must be supported by the implementation's settings) through
/// `cluster` and checks, waiting at most `timeout` for each event:
///
/// 1. both streams start with `Relisted`;
/// 2. `apply_kubefiles(deployment)` → a Deployment labelled with the build
///    name, init status `todo`, 0 replicas, readable by `get_deployment`;
/// 3. `set_init_status` and `scale` show in the events, `scale` writing
///    `runboat/last-scaled`;
/// 4. `apply_kubefiles(initialize)` → an initialize Job of the build;
///    `kill_jobs` makes it go (deleted, or deleting);
/// 5. `delete_deployment` → the finalizer keeps it with a deletion
///    timestamp; deleting again is fine;
/// 6. `delete_build_resources` then `remove_finalizer` → the Deployment is
///    gone (`Deleted` event, `get_deployment` is `None`); both again are
///    fine; `scale` of the gone build is `NotFound`.
///
/// Returns a message naming the first broken expectation.
pub async fn check_cluster_contract(
    cluster: &dyn Cluster,
    build_name: &str,
    commit: &CommitInfo,
    timeout: Duration,
) -> Result<(), String> {
    let b = build_name;
    let mut deps = cluster.deployment_events();
    let mut jobs: BoxStream<'static, ClusterEvent<JobFacts>> = cluster.job_events();
    for (first, what) in [
        (deps.next().await.map(|e| matches!(e, ClusterEvent::Relisted(_))), "deployment"),
        (jobs.next().await.map(|e| matches!(e, ClusterEvent::Relisted(_))), "job"),
    ] {
        if first != Some(true) {
            return Err(format!("the {what} stream does not start with Relisted"));
        }
    }
    let err = |call: &str, e: crate::cluster::ClusterError| format!("{call} failed: {e}");

    cluster
        .apply_kubefiles(b, commit, KubefilesMode::Deployment)
        .await
        .map_err(|e| err("apply_kubefiles(deployment)", e))?;
    wait_for(&mut deps, timeout, "the new build's Deployment (todo, 0 replicas)", |e, f| {
        matches!(e, ClusterEvent::Applied(_))
            && is_build(f, b)
            && f.annotations.get(ANNOTATION_INIT_STATUS).map(String::as_str) == Some("todo")
            && f.spec_replicas.unwrap_or(0) == 0
            && f.deletion_timestamp.is_none()
    })
    .await?;
    match cluster.get_deployment(b).await.map_err(|e| err("get_deployment", e))? {
        Some(f) if is_build(&f, b) => {}
        other => return Err(format!("get_deployment of a new build gave {other:?}")),
    }

    cluster
        .set_init_status(b, InitStatus::Succeeded)
        .await
        .map_err(|e| err("set_init_status", e))?;
    wait_for(&mut deps, timeout, "init status succeeded", |_, f| {
        is_build(f, b)
            && f.annotations.get(ANNOTATION_INIT_STATUS).map(String::as_str) == Some("succeeded")
    })
    .await?;
    cluster.scale(b, 1).await.map_err(|e| err("scale", e))?;
    wait_for(&mut deps, timeout, "1 replica and runboat/last-scaled", |_, f| {
        is_build(f, b)
            && f.spec_replicas == Some(1)
            && f.annotations
                .get(ANNOTATION_LAST_SCALED)
                .is_some_and(|v| v.parse::<jiff::Timestamp>().is_ok())
    })
    .await?;

    cluster
        .apply_kubefiles(b, commit, KubefilesMode::Initialize)
        .await
        .map_err(|e| err("apply_kubefiles(initialize)", e))?;
    wait_for(&mut jobs, timeout, "the build's initialize Job", |e, j| {
        matches!(e, ClusterEvent::Applied(_))
            && j.build_name == b
            && j.kind == JobKind::Initialize
            && !j.deleting
    })
    .await?;
    cluster.kill_jobs(b, JobKind::Initialize).await.map_err(|e| err("kill_jobs", e))?;
    wait_for(&mut jobs, timeout, "the initialize Job deleted", |e, j| {
        j.build_name == b && (matches!(e, ClusterEvent::Deleted(_)) || j.deleting)
    })
    .await?;

    cluster.delete_deployment(b).await.map_err(|e| err("delete_deployment", e))?;
    wait_for(&mut deps, timeout, "the Deployment kept by its finalizer, deleting", |e, f| {
        matches!(e, ClusterEvent::Applied(_)) && is_build(f, b) && f.deletion_timestamp.is_some()
    })
    .await?;
    cluster.delete_deployment(b).await.map_err(|e| err("delete_deployment (again)", e))?;

    cluster.delete_build_resources(b).await.map_err(|e| err("delete_build_resources", e))?;
    cluster.remove_finalizer(b).await.map_err(|e| err("remove_finalizer", e))?;
    wait_for(&mut deps, timeout, "the Deployment deleted", |e, f| {
        matches!(e, ClusterEvent::Deleted(_)) && is_build(f, b)
    })
    .await?;
    if let Some(f) = cluster.get_deployment(b).await.map_err(|e| err("get_deployment", e))? {
        return Err(format!("get_deployment of a deleted build gave {f:?}"));
    }
    cluster.remove_finalizer(b).await.map_err(|e| err("remove_finalizer (gone)", e))?;
    cluster.delete_build_resources(b).await.map_err(|e| err("delete_build_resources (gone)", e))?;
    cluster.delete_deployment(b).await.map_err(|e| err("delete_deployment (gone)", e))?;
    cluster.kill_jobs(b, JobKind::Cleanup).await.map_err(|e| err("kill_jobs (none)", e))?;
    match cluster.scale(b, 0).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => Err(format!("scale of a deleted build gave {other:?}, expected NotFound")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimCluster, SimConfig};

    #[tokio::test(start_paused = true)]
    async fn the_sim_keeps_the_cluster_contract_even_with_delayed_events() {
        let commit = CommitInfo::new("oca/repo", "16.0", Some(3), &"c".repeat(40)).expect("commit");
        let sim = SimCluster::new(SimConfig {
            faults: Faults {
                max_event_delay: Duration::from_millis(300),
                duplicate_rate: 0.3,
                ..Faults::default()
            },
            ..SimConfig::default()
        });
        check_cluster_contract(&sim, &commit.build_name(), &commit, Duration::from_secs(5))
            .await
            .expect("contract");
        assert!(sim.deployment(&commit.build_name()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_sim_keeps_the_name_of_a_build_made_by_the_original() {
        // The Python runboat named builds `b` + a UUID: they keep that name.
        let commit = CommitInfo::new("oca/repo", "16.0", None, &"d".repeat(40)).expect("commit");
        let sim = SimCluster::new(SimConfig::default());
        let name = "b0f4c2e9a7d8b4c1e8f3a2b1c0d9e8f7a";
        check_cluster_contract(&sim, name, &commit, Duration::from_secs(5))
            .await
            .expect("contract");
        assert!(sim.deployment(&commit.build_name()).is_none(), "no build under the derived name");
    }
}
