//! Simulated controllers: Deployments (through ReplicaSets to pods), Jobs
//! (one pod per attempt, scripted outcome and log), a kubelet that makes
//! pods run, and the garbage collector. They read the event history like a
//! watch and write through the store like any client.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::api::{DeleteOpts, WriteOpts, finalizers, now, splitmix};
use crate::config::{ControllerConfig, JobOutcome, JobScript};
use crate::resources::{DEPLOYMENTS, EVENTS, JOBS, NAMESPACES, PODS, REPLICASETS, ResId};
use crate::sim::Inner;
use crate::store::{EventType, Location, State};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    Deployment(String, String),
    ReplicaSet(String, String),
    Job(String, String),
    /// Dependents of a deleted owner.
    Orphans(String),
    /// An object being deleted in the foreground, by location.
    Foreground(ResId, String, String),
    Namespace(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
/// A pod transition due at some time.
enum Timer {
    Running(String, String),
    Finished(String, String),
    Terminated(String, String),
}

struct Controllers {
    inner: Arc<Inner>,
    queue: BTreeSet<Work>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    scripts: HashMap<(String, String), JobScript>,
    /// Whether to record Events.
    events: bool,
    last_stamp: std::cell::Cell<u64>,
    /// Job pods stopped by their job's activeDeadlineSeconds.
    deadline_pods: std::collections::HashSet<(String, String)>,
}

/// Runs the controllers until the server stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut rx = inner.store.subscribe();
    let mut paused = inner.paused.subscribe();
    let mut c = Controllers {
        inner: inner.clone(),
        queue: BTreeSet::new(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        scripts: HashMap::new(),
        deadline_pods: Default::default(),
        events: false,
        last_stamp: std::cell::Cell::new(0),
    };
    let mut cursor = 0;
    let mut idle = false;
    // The switches of the previous round: work of a switched-off controller
    // is dropped, so switching one back on looks at everything again.
    let mut was = inner.controller_config();
    loop {
        if *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
            continue;
        }
        let cfg = inner.controller_config();
        let active = cfg.deployments
            || cfg.jobs
            || cfg.garbage_collector
            || !cfg.pod_termination_delay.is_zero();
        if !active {
            // Nothing to simulate: skip the events, look at everything when switched on.
            idle = true;
            cursor = inner.store.read().rv;
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                r = paused.changed() => if r.is_err() { return },
            }
            continue;
        }
        c.events = cfg.events;
        let switched_on = (cfg.deployments && !was.deployments)
            || (cfg.jobs && !was.jobs)
            || (cfg.garbage_collector && !was.garbage_collector);
        was = cfg.clone();
        if idle {
            idle = false;
            cursor = c.resync();
        } else if switched_on {
            c.resync();
        }
        let batch = {
            let state = inner.store.read();
            state.events_after(cursor, 10_000).map(|evs| (evs, state.rv))
        };
        match batch {
            Some((events, rv)) => {
                let full = events.len() == 10_000;
                for ev in &events {
                    c.classify(ev.res, &ev.ns, &ev.name, ev.kind, &ev.obj.value(), &ev.obj.uid);
                }
                cursor = if full { events.last().map_or(rv, |e| e.rv) } else { rv };
            }
            None => {
                cursor = c.resync();
            }
        }
        c.run_due_timers(&cfg);
        c.drain_queue(&cfg);
        // Writes above produced events: go round again before sleeping.
        if inner.store.read().rv != cursor {
            continue;
        }
        let next_timer = c.timers.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            r = paused.changed() => if r.is_err() { return },
        }
    }
}

/// True when a live object's status was computed for its current spec.
fn status_is_current(v: &Value) -> bool {
    let generation = v.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = v.pointer("/status/observedGeneration").and_then(Value::as_i64);
    generation.is_some()
        && generation == observed
        && v.pointer("/metadata/deletionTimestamp").is_none()
}

fn owner_refs(v: &Value) -> Vec<(String, String, String)> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (s("kind"), s("name"), s("uid"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn name_hash(v: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = v.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut x = splitmix(h);
    let mut s = String::new();
    for _ in 0..10 {
        s.push(char::from(ALPHABET[(x % ALPHABET.len() as u64) as usize]));
        x /= ALPHABET.len() as u64;
    }
    s
}

fn owner_ref(kind: &str, api_version: &str, v: &Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "name": v["metadata"]["name"], "uid": v["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn set_or_remove(target: &mut Value, key: &str, n: i64) {
    if n == 0 {
        if let Some(m) = target.as_object_mut() {
            m.remove(key);
        }
    } else {
        target[key] = json!(n);
    }
}

/// Sets a condition, keeping its transition time when the status is unchanged.
fn set_condition(status: &mut Value, ctype: &str, value: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else { return };
    let now = now();
    match conds.iter_mut().find(|c| c["type"] == ctype) {
        Some(c) => {
            if c["status"] != value {
                c["lastTransitionTime"] = json!(now);
                c["lastUpdateTime"] = json!(now);
            }
            if c["reason"] != reason {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(value);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(json!({
            "type": ctype, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": now, "lastUpdateTime": now,
        })),
    }
}

impl Controllers {
    fn enqueue(&mut self, w: Work) {
        self.queue.insert(w);
    }

    fn classify(
        &mut self,
        res: ResId,
        ns: &str,
        name: &str,
        kind: EventType,
        v: &Value,
        uid: &str,
    ) {
        match res {
            // A Deployment whose status already reflects its spec
            // (observedGeneration = generation) changed only in metadata or
            // status: nothing for the controller to do, as its pods and
            // ReplicaSets enqueue it themselves when they change. Skipping
            // these keeps a burst of annotation patches (runboat writes
            // them on every scale) from costing a full reconcile each.
            DEPLOYMENTS if kind == EventType::Modified && status_is_current(v) => {}
            DEPLOYMENTS => self.enqueue(Work::Deployment(ns.into(), name.into())),
            REPLICASETS => self.enqueue(Work::ReplicaSet(ns.into(), name.into())),
            JOBS => self.enqueue(Work::Job(ns.into(), name.into())),
            NAMESPACES
                if v.pointer("/metadata/deletionTimestamp").is_some()
                    && kind != EventType::Deleted =>
            {
                self.enqueue(Work::Namespace(name.into()));
            }
            _ => {}
        }
        for (okind, oname, ouid) in owner_refs(v) {
            match okind.as_str() {
                "ReplicaSet" => self.enqueue(Work::ReplicaSet(ns.into(), oname)),
                "Deployment" => self.enqueue(Work::Deployment(ns.into(), oname)),
                "Job" => self.enqueue(Work::Job(ns.into(), oname)),
                _ => {}
            }
            if kind == EventType::Deleted {
                // An owner waiting in the foreground may now be free to go.
                let owner = self.inner.store.read().by_uid.get(&ouid).cloned();
                if let Some((r, n, nm)) = owner {
                    self.enqueue(Work::Foreground(r, n, nm));
                }
            }
        }
        if res == PODS
            && kind == EventType::Modified
            && v.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(v).is_empty()
        {
            let grace = v
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let delay = self
                .inner
                .controller_config()
                .pod_termination_delay
                .min(Duration::from_secs(grace));
            self.schedule(delay, Timer::Terminated(ns.into(), name.into()));
        }
        if kind == EventType::Deleted {
            self.enqueue(Work::Orphans(uid.into()));
            if !ns.is_empty() {
                self.enqueue(Work::Namespace(ns.into()));
            }
        } else if finalizers(v).iter().any(|f| f == "foregroundDeletion")
            && v.pointer("/metadata/deletionTimestamp").is_some()
        {
            self.enqueue(Work::Foreground(res, ns.into(), name.into()));
        }
    }

    /// After losing track of events (history compacted): look at everything.
    fn resync(&mut self) -> u64 {
        let state = self.inner.store.read();
        for (res, map) in state.objects.iter().enumerate() {
            for (ns, name) in map.keys() {
                match res {
                    DEPLOYMENTS => self.queue.insert(Work::Deployment(ns.clone(), name.clone())),
                    REPLICASETS => self.queue.insert(Work::ReplicaSet(ns.clone(), name.clone())),
                    JOBS => self.queue.insert(Work::Job(ns.clone(), name.clone())),
                    NAMESPACES => self.queue.insert(Work::Namespace(name.clone())),
                    _ => self.queue.insert(Work::Foreground(res, ns.clone(), name.clone())),
                };
            }
        }
        for owner in state.dependents.keys() {
            if !state.by_uid.contains_key(owner) {
                self.queue.insert(Work::Orphans(owner.clone()));
            }
        }
        state.rv
    }

    fn schedule(&mut self, delay: Duration, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((Instant::now() + delay, self.timer_seq, t)));
    }

    fn run_due_timers(&mut self, cfg: &ControllerConfig) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, _, t))) = self.timers.pop() else { break };
            match t {
                Timer::Running(ns, name) => self.pod_running(&ns, &name, cfg),
                Timer::Finished(ns, name) => self.pod_finished(&ns, &name),
                Timer::Terminated(ns, name) => self.inner.store.write(|state| {
                    let gone = state.get(PODS, &ns, &name).is_some_and(|p| {
                        let v = p.value();
                        v.pointer("/metadata/deletionTimestamp").is_some()
                            && finalizers(&v).is_empty()
                    });
                    if gone {
                        state.commit(PODS, &ns, &name, None);
                    }
                }),
            }
        }
    }

    fn drain_queue(&mut self, cfg: &ControllerConfig) {
        while let Some(w) = self.queue.pop_first() {
            match w {
                Work::Deployment(ns, name) if cfg.deployments => {
                    self.inner.deployment_reconciles.fetch_add(1, Ordering::Relaxed);
                    self.deployment(&ns, &name);
                }
                Work::ReplicaSet(ns, name) if cfg.deployments => self.replicaset(&ns, &name, cfg),
                Work::Job(ns, name) if cfg.jobs => self.job(&ns, &name, cfg),
                Work::Orphans(uid) if cfg.garbage_collector => self.orphans(&uid),
                Work::Foreground(res, ns, name) if cfg.garbage_collector => {
                    self.foreground(res, &ns, &name)
                }
                Work::Namespace(name) => {
                    let terminating = self
                        .get(NAMESPACES, "", &name)
                        .is_some_and(|v| v.pointer("/metadata/deletionTimestamp").is_some());
                    if terminating {
                        self.inner.store.write(|state| self.inner.finish_namespace(state, &name));
                    }
                }
                _ => {}
            }
        }
    }

    /// A name suffix that grows with time, like the real recorder's
    /// (nanoseconds), and strictly, so names are unique and sort by time.
    fn event_stamp(&self) -> u64 {
        let nanos = u64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0);
        let stamp = nanos.max(self.last_stamp.get() + 1);
        self.last_stamp.set(stamp);
        stamp
    }

    /// Records a core/v1 Event about `obj`, as the real controllers do.
    fn event(
        &self,
        obj: &Value,
        kind: &str,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        if !self.events {
            return;
        }
        let meta = &obj["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        let ns = meta["namespace"].as_str().unwrap_or_default();
        let now = now();
        let body = json!({
            "metadata": {"name": format!("{name}.{:016x}", self.event_stamp()), "namespace": ns},
            "involvedObject": {
                "kind": kind, "namespace": ns, "name": name, "uid": meta["uid"],
                "apiVersion": obj["apiVersion"], "resourceVersion": meta["resourceVersion"],
            },
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "eventTime": null,
        });
        self.create(EVENTS, ns, body);
    }

    fn get(&self, res: ResId, ns: &str, name: &str) -> Option<Value> {
        self.inner.store.read().get(res, ns, name).map(|o| o.value())
    }

    /// Objects of `res` owned by `uid`.
    fn owned(&self, uid: &str, res: ResId) -> Vec<Value> {
        let state = self.inner.store.read();
        let Some(deps) = state.dependents.get(uid) else { return Vec::new() };
        let mut out: Vec<Value> = deps
            .iter()
            .filter(|(r, _, _)| *r == res)
            .filter_map(|(r, ns, name)| state.get(*r, ns, name).map(|o| o.value()))
            .collect();
        out.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
        out
    }

    /// Changes an object in place (status included); no-op changes are not written.
    fn mutate(&self, res: ResId, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        self.inner.store.write(|state: &mut State| {
            let Some(old) = state.get(res, ns, name).map(|o| o.value()) else { return };
            let mut new = old.clone();
            f(&mut new);
            if new != old {
                state.commit(res, ns, name, Some(new));
            }
        });
    }

    fn create(&self, res: ResId, ns: &str, body: Value) -> Option<Value> {
        match self.inner.create(res, ns, body, &WriteOpts::default()) {
            Ok((_, json)) => serde_json::from_slice(&json).ok(),
            Err(e) => {
                tracing::debug!(error = %e, "simulated controller could not create an object");
                None
            }
        }
    }

    fn delete(&self, res: ResId, ns: &str, name: &str) {
        let opts = DeleteOpts { propagation: Some("Background".into()), ..DeleteOpts::default() };
        let _ = self.inner.delete(res, ns, name, &opts);
    }

    fn deployment(&mut self, ns: &str, name: &str) {
        let Some(d) = self.get(DEPLOYMENTS, ns, name) else { return };
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = name_hash(&template);
        template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let rs_name = format!("{name}-{hash}");
        let existing = self.owned(&uid, REPLICASETS);
        let revision = existing
            .iter()
            .filter_map(|rs| {
                rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                    .and_then(Value::as_str)
            })
            .filter_map(|r| r.parse::<i64>().ok())
            .max()
            .unwrap_or(0);
        for rs in &existing {
            let rname = rs["metadata"]["name"].as_str().unwrap_or_default();
            let had = int(rs, "/spec/replicas");
            if rname != rs_name && had != 0 {
                self.mutate(REPLICASETS, ns, rname, |v| v["spec"]["replicas"] = json!(0));
                self.event(
                    &d,
                    "Deployment",
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled down replica set {rname} from {had} to 0"),
                    "deployment-controller",
                );
            }
        }
        let current = existing.iter().find(|rs| rs["metadata"]["name"] == rs_name.as_str());
        match current {
            Some(rs) => {
                let had = int(rs, "/spec/replicas");
                if had != replicas {
                    self.mutate(REPLICASETS, ns, &rs_name, |v| {
                        v["spec"]["replicas"] = json!(replicas)
                    });
                    let dir = if replicas > had { "up" } else { "down" };
                    self.event(
                        &d,
                        "Deployment",
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled {dir} replica set {rs_name} from {had} to {replicas}"),
                        "deployment-controller",
                    );
                }
            }
            None => {
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let body = json!({
                    "metadata": {
                        "name": rs_name, "namespace": ns,
                        "labels": template["metadata"]["labels"],
                        "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(), "deployment.kubernetes.io/desired-replicas": replicas.to_string()},
                        "ownerReferences": [owner_ref("Deployment", "apps/v1", &d)],
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                });
                self.create(REPLICASETS, ns, body);
                self.event(
                    &d,
                    "Deployment",
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
                    "deployment-controller",
                );
            }
        }
        // Status from the pods of all its ReplicaSets.
        let mut total = 0;
        let mut updated = 0;
        let mut ready = 0;
        for rs in self.owned(&uid, REPLICASETS) {
            let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or_default().to_string();
            for pod in self.owned(&rs_uid, PODS) {
                if pod.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                total += 1;
                if rs["metadata"]["name"] == rs_name.as_str() {
                    updated += 1;
                }
                if pod_ready(&pod) {
                    ready += 1;
                }
            }
        }
        let generation = int(&d, "/metadata/generation");
        self.mutate(DEPLOYMENTS, ns, name, |v| {
            let mut status = v.get("status").cloned().filter(Value::is_object).unwrap_or(json!({}));
            status["observedGeneration"] = json!(generation);
            set_or_remove(&mut status, "replicas", total);
            set_or_remove(&mut status, "updatedReplicas", updated);
            set_or_remove(&mut status, "readyReplicas", ready);
            set_or_remove(&mut status, "availableReplicas", ready);
            set_or_remove(&mut status, "unavailableReplicas", (replicas - ready).max(0));
            if ready >= replicas {
                set_condition(
                    &mut status,
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                );
            } else {
                set_condition(
                    &mut status,
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                );
            }
            if updated == replicas && ready >= replicas && total == replicas {
                set_condition(
                    &mut status,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                );
            } else {
                set_condition(
                    &mut status,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_name}\" is progressing."),
                );
            }
            v["status"] = status;
        });
    }

    fn replicaset(&mut self, ns: &str, name: &str, cfg: &ControllerConfig) {
        let Some(rs) = self.get(REPLICASETS, ns, name) else { return };
        if rs.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let uid = rs["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let want = int(&rs, "/spec/replicas");
        let pods: Vec<Value> = self
            .owned(&uid, PODS)
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .collect();
        let have = i64::try_from(pods.len()).unwrap_or(i64::MAX);
        if have < want {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in have..want {
                let body = json!({
                    "metadata": {
                        "generateName": format!("{name}-"), "namespace": ns,
                        "labels": template["metadata"]["labels"],
                        "annotations": template["metadata"].get("annotations").cloned().unwrap_or(json!({})),
                        "ownerReferences": [owner_ref("ReplicaSet", "apps/v1", &rs)],
                    },
                    "spec": template.get("spec").cloned().unwrap_or(json!({})),
                });
                if let Some(pod) = self.create(PODS, ns, body) {
                    let pname = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    self.event(
                        &rs,
                        "ReplicaSet",
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {pname}"),
                        "replicaset-controller",
                    );
                    self.schedule(cfg.pod_ready_delay, Timer::Running(ns.into(), pname));
                }
            }
        } else if have > want {
            for pod in pods.iter().rev().take(usize::try_from(have - want).unwrap_or(0)) {
                self.delete(PODS, ns, pod["metadata"]["name"].as_str().unwrap_or_default());
            }
        }
        let pods: Vec<Value> = self
            .owned(&uid, PODS)
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .collect();
        let total = i64::try_from(pods.len()).unwrap_or(0);
        let ready = i64::try_from(pods.iter().filter(|p| pod_ready(p)).count()).unwrap_or(0);
        let generation = int(&rs, "/metadata/generation");
        self.mutate(REPLICASETS, ns, name, |v| {
            let mut status = json!({"replicas": total, "observedGeneration": generation});
            set_or_remove(&mut status, "fullyLabeledReplicas", total);
            set_or_remove(&mut status, "readyReplicas", ready);
            set_or_remove(&mut status, "availableReplicas", ready);
            v["status"] = status;
        });
    }

    fn script_for(&self, job: &Value, cfg: &ControllerConfig) -> JobScript {
        if let Some(hook) = &cfg.job_hook
            && let Some(s) = hook(job)
        {
            return s;
        }
        let name = job["metadata"]["name"].as_str().unwrap_or_default();
        let labels = crate::validate::labels_of(job);
        cfg.job_rules
            .iter()
            .find(|r| r.matches(name, &labels))
            .map(crate::config::JobRule::script)
            .unwrap_or_else(JobScript::succeed)
    }

    fn job(&mut self, ns: &str, name: &str, cfg: &ControllerConfig) {
        let Some(job) = self.get(JOBS, ns, name) else { return };
        if job.pointer("/metadata/deletionTimestamp").is_some()
            || job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        {
            return;
        }
        let finished =
            job.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
                cs.iter().any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            });
        if finished {
            return;
        }
        let uid = job["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let pods = self.owned(&uid, PODS);
        let phase = |p: &Value| {
            p.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default().to_string()
        };
        let succeeded =
            i64::try_from(pods.iter().filter(|p| phase(p) == "Succeeded").count()).unwrap_or(0);
        let failed =
            i64::try_from(pods.iter().filter(|p| phase(p) == "Failed").count()).unwrap_or(0);
        let mut active = i64::try_from(
            pods.iter().filter(|p| matches!(phase(p).as_str(), "Pending" | "Running")).count(),
        )
        .unwrap_or(0);
        let backoff = job.pointer("/spec/backoffLimit").and_then(Value::as_i64).unwrap_or(6);
        let deadline_hit = pods.iter().any(|p| {
            p.pointer("/status/reason").and_then(Value::as_str) == Some("DeadlineExceeded")
        });
        let (fail_reason, fail_message) = if deadline_hit {
            ("DeadlineExceeded", "Job was active longer than specified deadline")
        } else {
            ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        };
        let outcome = if succeeded >= 1 {
            Some(true)
        } else if failed > backoff || deadline_hit {
            Some(false)
        } else {
            None
        };
        if outcome.is_none() && active == 0 {
            let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            let body = json!({
                "metadata": {
                    "generateName": format!("{name}-"), "namespace": ns, "labels": labels,
                    "annotations": template["metadata"].get("annotations").cloned().unwrap_or(json!({})),
                    "ownerReferences": [owner_ref("Job", "batch/v1", &job)],
                },
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
            });
            if let Some(pod) = self.create(PODS, ns, body) {
                let pname = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                self.event(
                    &job,
                    "Job",
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {pname}"),
                    "job-controller",
                );
                let mut script = self.script_for(&job, cfg);
                let mut run_for = script.duration.unwrap_or(cfg.job_duration);
                // activeDeadlineSeconds stops a pod that would run longer.
                if let Some(deadline) = job
                    .pointer("/spec/activeDeadlineSeconds")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs)
                    && run_for > deadline
                {
                    run_for = deadline;
                    script.outcome = JobOutcome::Fail;
                    self.deadline_pods.insert((ns.into(), pname.clone()));
                }
                self.scripts.insert((ns.into(), pname.clone()), script);
                self.schedule(Duration::ZERO, Timer::Running(ns.into(), pname.clone()));
                self.schedule(run_for, Timer::Finished(ns.into(), pname));
                active += 1;
            }
        }
        match outcome {
            Some(true) => {
                self.event(&job, "Job", "Normal", "Completed", "Job completed", "job-controller")
            }
            Some(false) => {
                self.event(&job, "Job", "Warning", fail_reason, fail_message, "job-controller")
            }
            None => {}
        }
        let now = now();
        self.mutate(JOBS, ns, name, |v| {
            let mut status = v.get("status").cloned().filter(Value::is_object).unwrap_or(json!({}));
            if status.get("startTime").is_none() {
                status["startTime"] = json!(now);
            }
            set_or_remove(&mut status, "active", if outcome.is_some() { 0 } else { active });
            set_or_remove(&mut status, "succeeded", succeeded);
            set_or_remove(&mut status, "failed", failed);
            status["ready"] = json!(0);
            status["terminating"] = json!(0);
            status["uncountedTerminatedPods"] = json!({});
            match outcome {
                Some(true) => {
                    set_condition(
                        &mut status,
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    );
                    set_condition(
                        &mut status,
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    );
                    status["completionTime"] = json!(now);
                }
                Some(false) => {
                    set_condition(&mut status, "FailureTarget", "True", fail_reason, fail_message);
                    set_condition(&mut status, "Failed", "True", fail_reason, fail_message);
                }
                None => {}
            }
            if let Some(conds) = status["conditions"].as_array_mut() {
                for c in conds {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("lastUpdateTime");
                        m.insert(
                            "lastProbeTime".into(),
                            m.get("lastTransitionTime").cloned().unwrap_or(json!(null)),
                        );
                    }
                }
            }
            v["status"] = status;
        });
    }

    fn pod_running(&mut self, ns: &str, name: &str, _cfg: &ControllerConfig) {
        let Some(pod) = self.get(PODS, ns, name) else { return };
        if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Pending") {
            return;
        }
        let containers: Vec<(String, String)> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_string(),
                            c["image"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let job_name =
            pod.pointer("/metadata/labels/job-name").and_then(Value::as_str).map(str::to_string);
        {
            let mut logs =
                self.inner.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (c, image) in &containers {
                let key = (ns.to_string(), name.to_string(), c.clone());
                if logs.contains_key(&key) {
                    continue;
                }
                let text = match (&job_name, self.scripts.get(&(ns.to_string(), name.to_string()))) {
                    (Some(job), Some(script)) => script.log.clone().unwrap_or_else(|| {
                        let end = match script.outcome {
                            JobOutcome::Succeed => "completed successfully",
                            JobOutcome::Fail => "failed with exit code 1",
                        };
                        format!("kubesim: job {job} container {c} started (image {image})\nkubesim: working...\nkubesim: job {job} {end}\n")
                    }),
                    _ => format!("kubesim: container {c} started (image {image})\nkubesim: listening\n"),
                };
                logs.insert(key, text);
            }
        }
        let now = now();
        let ip = format!(
            "10.244.{}.{}",
            (splitmix(name.len() as u64 ^ self.inner.seed) % 250),
            self.inner.next_id() % 250 + 1
        );
        self.mutate(PODS, ns, name, |v| {
            let statuses: Vec<Value> = containers
                .iter()
                .map(|(c, image)| json!({
                    "name": c, "image": image, "imageID": format!("{image}@sha256:kubesim"), "ready": true, "started": true,
                    "restartCount": 0, "state": {"running": {"startedAt": now}}, "containerID": format!("kubesim://{c}"),
                }))
                .collect();
            v["spec"]["nodeName"] = json!("kubesim-node");
            v["status"] = json!({
                "phase": "Running", "startTime": now, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1", "qosClass": "BestEffort",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now, "lastProbeTime": null},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now, "lastProbeTime": null},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now, "lastProbeTime": null},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now, "lastProbeTime": null},
                ],
                "containerStatuses": statuses,
            });
        });
        self.event(
            &pod,
            "Pod",
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to kubesim-node"),
            "default-scheduler",
        );
        for (c, _) in &containers {
            self.event(
                &pod,
                "Pod",
                "Normal",
                "Started",
                &format!("Started container {c}"),
                "kubelet",
            );
        }
    }

    fn pod_finished(&mut self, ns: &str, name: &str) {
        let Some(script) = self.scripts.remove(&(ns.to_string(), name.to_string())) else { return };
        let ok = script.outcome == JobOutcome::Succeed;
        let deadline = self.deadline_pods.remove(&(ns.to_string(), name.to_string()));
        let now = now();
        self.mutate(PODS, ns, name, |v| {
            if deadline {
                v["status"]["reason"] = json!("DeadlineExceeded");
                v["status"]["message"] = json!("Pod was active on the node longer than the specified deadline");
            }
            let code = if ok { 0 } else { 1 };
            let reason = if ok { "Completed" } else { "Error" };
            v["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
            if let Some(conds) = v["status"]["conditions"].as_array_mut() {
                for c in conds.iter_mut().filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady") {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodCompleted");
                    c["lastTransitionTime"] = json!(now);
                }
            }
            if let Some(cs) = v["status"]["containerStatuses"].as_array_mut() {
                for c in cs {
                    let started = c.pointer("/state/running/startedAt").cloned().unwrap_or(json!(now));
                    c["ready"] = json!(false);
                    c["started"] = json!(false);
                    c["state"] = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now, "containerID": c["containerID"]}});
                }
            }
        });
    }

    /// Dependents of a deleted owner: deleted when no owner is left,
    /// otherwise the reference to the gone owner is dropped.
    fn orphans(&mut self, uid: &str) {
        let deps: Vec<Location> = {
            let state = self.inner.store.read();
            if state.by_uid.contains_key(uid) {
                return;
            }
            state.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default()
        };
        for (res, ns, name) in deps {
            let Some(v) = self.get(res, &ns, &name) else { continue };
            let others = owner_refs(&v)
                .into_iter()
                .filter(|(_, _, u)| u != uid)
                .any(|(_, _, u)| self.inner.store.read().by_uid.contains_key(&u));
            if others {
                self.mutate(res, &ns, &name, |v| {
                    if let Some(refs) =
                        v.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"].as_str() != Some(uid));
                    }
                });
            } else {
                self.delete(res, &ns, &name);
            }
        }
    }

    /// An owner deleted in the foreground: its dependents go first, then it.
    fn foreground(&mut self, res: ResId, ns: &str, name: &str) {
        let Some(v) = self.get(res, ns, name) else { return };
        if v.pointer("/metadata/deletionTimestamp").is_none()
            || !finalizers(&v).iter().any(|f| f == "foregroundDeletion")
        {
            return;
        }
        let uid = v["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let deps: Vec<Location> = self
            .inner
            .store
            .read()
            .dependents
            .get(&uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if deps.is_empty() {
            self.inner.store.write(|state| {
                let Some(mut cur) = state.get(res, ns, name).map(|o| o.value()) else { return };
                let left: Vec<String> =
                    finalizers(&cur).into_iter().filter(|f| f != "foregroundDeletion").collect();
                cur["metadata"]["finalizers"] = json!(left);
                if left.is_empty() {
                    if let Some(m) = cur["metadata"].as_object_mut() {
                        m.remove("finalizers");
                    }
                    state.commit(res, ns, name, Some(cur));
                    state.commit(res, ns, name, None);
                } else {
                    state.commit(res, ns, name, Some(cur));
                }
            });
            return;
        }
        for (dres, dns, dname) in deps {
            let pending = self
                .get(dres, &dns, &dname)
                .is_some_and(|d| d.pointer("/metadata/deletionTimestamp").is_some());
            if !pending {
                let opts =
                    DeleteOpts { propagation: Some("Foreground".into()), ..DeleteOpts::default() };
                let _ = self.inner.delete(dres, &dns, &dname, &opts);
            }
        }
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_name_safe() {
        let a = name_hash(&json!({"spec": {"containers": [{"name": "c"}]}}));
        let b = name_hash(&json!({"spec": {"containers": [{"name": "c"}]}}));
        let c = name_hash(&json!({"spec": {"containers": [{"name": "d"}]}}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(crate::validate::is_dns1123_label(&a));
    }
}
