//! [`Backend`] for the real controller ([`ControllerHandle`]).

use std::fmt::Write as _;

use async_trait::async_trait;
use runboat_core::{
    BuildIndex, ClusterError, CommandError, CommandOutcome, CommitInfo, ControllerHandle,
    SearchFilters,
};

use crate::backend::{Backend, BackendError, Outcome};

fn outcome(result: Result<CommandOutcome, CommandError>) -> Result<Outcome, BackendError> {
    match result {
        Ok(CommandOutcome::Done) => Ok(Outcome::Done),
        Ok(CommandOutcome::Ignored(reason)) => Ok(Outcome::Ignored { reason: reason.to_string() }),
        Ok(CommandOutcome::NotFound) => Ok(Outcome::NotFound),
        Ok(CommandOutcome::Unsupported) => Ok(Outcome::Unsupported {
            reason: "repo/branch is not supported by the settings".to_owned(),
        }),
        Err(e) => Err(command_error(e)),
    }
}

fn command_error(e: CommandError) -> BackendError {
    match e {
        CommandError::Stopped => BackendError::unavailable(e.to_string()),
        other => BackendError::new(other.to_string()),
    }
}

fn log_result(r: Result<Option<String>, ClusterError>) -> Result<Option<String>, BackendError> {
    match r {
        Ok(log) => Ok(log),
        // The pod went away between the build lookup and the log read.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(BackendError::new(format!("reading a log: {e}"))),
    }
}

#[async_trait]
impl Backend for ControllerHandle {
    fn with_index(&self, f: &mut dyn FnMut(&BuildIndex)) {
        ControllerHandle::with_index(self, |index| f(index));
    }

    fn is_ready(&self) -> bool {
        ControllerHandle::is_ready(self)
    }

    async fn deploy_commit(&self, commit: CommitInfo) -> Result<Outcome, BackendError> {
        outcome(ControllerHandle::deploy_commit(self, commit).await)
    }

    async fn start(&self, name: &str) -> Result<Outcome, BackendError> {
        outcome(ControllerHandle::start(self, name).await)
    }

    async fn stop(&self, name: &str) -> Result<Outcome, BackendError> {
        outcome(ControllerHandle::stop(self, name).await)
    }

    async fn reset(&self, name: &str) -> Result<Outcome, BackendError> {
        outcome(ControllerHandle::reset(self, name).await)
    }

    async fn undeploy(&self, name: &str) -> Result<Outcome, BackendError> {
        outcome(ControllerHandle::undeploy(self, name).await)
    }

    async fn undeploy_matching(&self, filters: SearchFilters) -> Result<usize, BackendError> {
        ControllerHandle::undeploy_matching(self, filters).await.map_err(command_error)
    }

    async fn init_log(&self, name: &str) -> Result<Option<String>, BackendError> {
        log_result(ControllerHandle::init_log(self, name).await)
    }

    async fn log(&self, name: &str) -> Result<Option<String>, BackendError> {
        log_result(ControllerHandle::log(self, name).await)
    }

    fn write_metrics(&self, out: &mut String) {
        let stats = self.stats();
        let counters = [
            ("runboat_controller_batches_total", "Reconcile batches.", stats.batches),
            (
                "runboat_controller_events_total",
                "Deployment and Job events received.",
                stats.events,
            ),
            ("runboat_controller_actions_total", "Cluster actions started.", stats.actions_started),
            (
                "runboat_controller_action_errors_total",
                "Cluster actions that ended in an error.",
                stats.actions_failed,
            ),
            (
                "runboat_controller_action_panics_total",
                "Cluster actions that panicked.",
                stats.actions_panicked,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP runboat_controller_watch_restarts_total Full relistings after a watch restarted.\n\
             # TYPE runboat_controller_watch_restarts_total counter\n\
             runboat_controller_watch_restarts_total {}",
            stats.watch_restarts
        );
        let _ = writeln!(
            out,
            "# HELP runboat_controller_actions_ended_total Cluster actions ended, by kind and \
             outcome (ok or the error kind).\n# TYPE runboat_controller_actions_ended_total counter"
        );
        for c in self.action_counts() {
            let _ = writeln!(
                out,
                "runboat_controller_actions_ended_total{{kind=\"{}\",outcome=\"{}\"}} {}",
                c.kind, c.outcome, c.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP runboat_cleanup_failures Undeploying builds whose cleanup job failed.\n\
             # TYPE runboat_cleanup_failures gauge\nrunboat_cleanup_failures {}",
            self.cleanup_failures().len()
        );
    }
}
