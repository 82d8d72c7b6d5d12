//! [`GitHubForge`]: the controller's [`Forge`], posting commit statuses to
//! GitHub from a background task.
//!
//! `post_status` only puts the status in a queue and wakes the sender task:
//! it never waits on the network nor on a lock held across I/O. The queue
//! keeps one entry per (repo, commit, context): a newer status for the same
//! commit replaces the queued one in place, so only the newest is sent.
//! Statuses are sent one at a time, in queue order, by a single task.
//!
//! The queue is bounded at [`MAX_QUEUED`] commits; when full, the oldest
//! queued status is dropped (with a warning) to make room, because the newest
//! statuses are the ones reviewers need. A failed post (after the client's
//! retries) is logged with its response and dropped: it never reaches the
//! controller.
//!
//! Turning statuses off (`disable_commit_statuses`) is the controller's
//! and the server's choice: the controller then posts none (and the server
//! hands it `runboat_core::forge::NoForge` unless deployments are on).
//!
//! Deployment updates (`github_deployments`) go through a second queue and
//! task under the same rules, keyed by build: a newer update of a build
//! replaces its queued one, so a burst becomes at most one call in flight
//! and one with the newest state. The first update of a build finds the
//! GitHub deployment made for it before a restart (by commit, environment
//! and the build's name in its payload) or creates it (the id is
//! remembered, for at most [`MAX_QUEUED`] builds: then they are forgotten
//! and found again), then posts the state;
//! an update with the state last posted is not sent again. When GitHub
//! rate-limits beyond what the client waits for itself, the update goes
//! back to the head of the queue (unless a newer one of its build is
//! there) and the task pauses as long as GitHub said.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use runboat_core::forge::{CommitStatus, DeploymentState, DeploymentUpdate, Forge};
use tokio::sync::{Notify, watch};

use crate::client::{GitHubClient, STATUS_CONTEXT};
use crate::error::error_chain;

/// The most distinct commits with a status waiting to be sent.
pub const MAX_QUEUED: usize = 10_000;

/// What makes two statuses "the same": only the newest is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    repo: String,
    git_commit: String,
    context: &'static str,
}

impl Key {
    fn of(status: &CommitStatus) -> Self {
        Self {
            repo: status.repo.clone(),
            git_commit: status.git_commit.clone(),
            context: STATUS_CONTEXT,
        }
    }
}

#[derive(Default)]
struct Queue {
    order: VecDeque<Key>,
    latest: HashMap<Key, CommitStatus>,
    closed: bool,
}

/// The deployment updates waiting, newest per (repo, build).
#[derive(Default)]
struct DeployQueue {
    order: VecDeque<(String, String)>,
    latest: HashMap<(String, String), DeploymentUpdate>,
}

struct Shared {
    queue: Mutex<Queue>,
    deployments: Mutex<DeployQueue>,
    deploy_wake: Notify,
    wake: Notify,
    /// Statuses queued or being sent; `flush` waits for zero.
    outstanding: watch::Sender<usize>,
    capacity: usize,
}

impl Shared {
    fn deploy_lock(&self) -> MutexGuard<'_, DeployQueue> {
        self.deployments.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue invalid
        // (each update is a couple of infallible steps): keep going.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Posts commit statuses to GitHub in the background. Dropping it lets the
/// sender task finish what is queued, then stop.
pub struct GitHubForge {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GitHubForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubForge").field("queued", &self.shared.lock().order.len()).finish()
    }
}

impl GitHubForge {
    /// Start the sender task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (as `tokio::spawn` does).
    pub fn new(client: GitHubClient) -> Self {
        Self::with_capacity(client, MAX_QUEUED)
    }

    /// Same as [`GitHubForge::new`] with a chosen queue bound (at least 1).
    pub fn with_capacity(client: GitHubClient, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            deployments: Mutex::new(DeployQueue::default()),
            deploy_wake: Notify::new(),
            wake: Notify::new(),
            outstanding: watch::Sender::new(0),
            capacity: capacity.max(1),
        });
        tokio::spawn(send_loop(client.clone(), Arc::clone(&shared)));
        tokio::spawn(deploy_loop(client, Arc::clone(&shared)));
        Self { shared }
    }

    /// Wait until the queue is empty and nothing is in flight: every
    /// status posted before (and during) the wait has been sent, or has
    /// failed and been logged. For tests and graceful shutdown.
    pub async fn flush(&self) {
        let mut outstanding = self.shared.outstanding.subscribe();
        // The sender lives in `self.shared`, so this cannot see it closed.
        let _ = outstanding.wait_for(|n| *n == 0).await;
    }

    /// Statuses waiting to be sent (not counting one being sent).
    pub fn queued(&self) -> usize {
        self.shared.lock().order.len()
    }

    /// Deployment updates waiting to be sent (not counting one being sent).
    pub fn queued_deployments(&self) -> usize {
        self.shared.deploy_lock().order.len()
    }
}

impl Forge for GitHubForge {
    fn post_status(&self, status: CommitStatus) {
        let key = Key::of(&status);
        let mut queue = self.shared.lock();
        if let Some(queued) = queue.latest.get_mut(&key) {
            *queued = status;
            return;
        }
        if queue.order.len() >= self.shared.capacity
            && let Some(oldest) = queue.order.pop_front()
        {
            queue.latest.remove(&oldest);
            self.shared.outstanding.send_modify(|n| *n = n.saturating_sub(1));
            tracing::warn!(
                repo = %oldest.repo,
                commit = %oldest.git_commit,
                "commit status queue full: dropped the oldest queued status"
            );
        }
        queue.order.push_back(key.clone());
        queue.latest.insert(key, status);
        self.shared.outstanding.send_modify(|n| *n += 1);
        drop(queue);
        self.shared.wake.notify_one();
    }

    fn post_deployment(&self, update: DeploymentUpdate) {
        self.shared.queue_deployment(update, false);
    }
}

impl Shared {
    fn queue_deployment(&self, update: DeploymentUpdate, front: bool) {
        let key = (update.repo.clone(), update.build_name.clone());
        let mut queue = self.deploy_lock();
        if let Some(queued) = queue.latest.get_mut(&key) {
            // A newer update of the build is queued: it wins over a retried
            // one, and replaces an older one in place.
            if !front {
                *queued = update;
            }
            return;
        }
        if queue.order.len() >= self.capacity
            && let Some(oldest) = queue.order.pop_front()
        {
            queue.latest.remove(&oldest);
            self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
            tracing::warn!(repo = %oldest.0, build = %oldest.1, "deployment queue full: dropped the oldest update");
        }
        if front {
            queue.order.push_front(key.clone());
        } else {
            queue.order.push_back(key.clone());
        }
        queue.latest.insert(key, update);
        self.outstanding.send_modify(|n| *n += 1);
        drop(queue);
        self.deploy_wake.notify_one();
    }
}

impl Drop for GitHubForge {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.deploy_wake.notify_one();
    }
}

async fn send_loop(client: GitHubClient, shared: Arc<Shared>) {
    loop {
        let next = {
            let mut queue = shared.lock();
            match queue.order.pop_front() {
                Some(key) => queue.latest.remove(&key),
                None if queue.closed => return,
                None => None,
            }
        };
        let Some(status) = next else {
            // `notify_one` stores a permit when nobody waits, so a status
            // queued between the check above and this await is not missed.
            shared.wake.notified().await;
            continue;
        };
        match client.create_status(&status).await {
            Ok(()) => tracing::debug!(
                repo = %status.repo,
                commit = %status.git_commit,
                state = %status.state,
                "commit status posted"
            ),
            Err(error) => tracing::warn!(
                repo = %status.repo,
                commit = %status.git_commit,
                state = %status.state,
                error = %error_chain(&error),
                "could not post commit status"
            ),
        }
        shared.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The longest pause after a rate limit that did not say how long.
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// The GitHub deployment of each build seen: its id and the state last
/// posted on it.
type Known = HashMap<(String, String), (u64, Option<DeploymentState>)>;

async fn deploy_loop(client: GitHubClient, shared: Arc<Shared>) {
    let mut known: Known = HashMap::new();
    loop {
        let next = {
            let mut queue = shared.deploy_lock();
            queue.order.pop_front().and_then(|key| queue.latest.remove(&key))
        };
        let Some(update) = next else {
            if shared.lock().closed {
                return;
            }
            // A stored permit covers an update queued since the check.
            shared.deploy_wake.notified().await;
            continue;
        };
        let key = (update.repo.clone(), update.build_name.clone());
        let paused = match send_deployment(&client, &mut known, &key, &update).await {
            Ok(()) => None,
            Err(crate::ClientError::RateLimited { wait, .. }) => {
                let wait = wait.unwrap_or(RATE_LIMIT_PAUSE).min(RATE_LIMIT_PAUSE * 60);
                tracing::warn!(repo = %update.repo, build = %update.build_name, ?wait, "GitHub rate limit: deployment update held");
                shared.queue_deployment(update, true);
                Some(wait)
            }
            Err(error) => {
                tracing::warn!(
                    repo = %update.repo,
                    build = %update.build_name,
                    state = %update.state,
                    error = %error_chain(&error),
                    "could not post deployment status"
                );
                None
            }
        };
        shared.outstanding.send_modify(|n| *n = n.saturating_sub(1));
        if let Some(wait) = paused {
            tokio::time::sleep(wait).await;
        }
    }
}

async fn send_deployment(
    client: &GitHubClient,
    known: &mut Known,
    key: &(String, String),
    update: &DeploymentUpdate,
) -> Result<(), crate::ClientError> {
    let id = match known.get(key) {
        Some((_, Some(last))) if *last == update.state => return Ok(()),
        Some((id, _)) => *id,
        None => {
            // Made before a restart? Else a new one, but not for a build
            // first seen inactive (undeployed before anything was sent).
            let id = match client.find_deployment(update).await? {
                Some(id) => id,
                None if update.state == DeploymentState::Inactive => return Ok(()),
                None => client.create_deployment(update).await?,
            };
            if known.len() >= MAX_QUEUED {
                known.clear();
            }
            known.insert(key.clone(), (id, None));
            id
        }
    };
    client.create_deployment_status(id, update).await?;
    // Kept when inactive too, so that the cleanup's "undeployed" after a
    // "superseded by" is not sent again.
    if let Some(entry) = known.get_mut(key) {
        entry.1 = Some(update.state);
    }
    tracing::debug!(repo = %update.repo, build = %update.build_name, state = %update.state, "deployment status posted");
    Ok(())
}
