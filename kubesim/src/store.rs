//! The in-memory object store: every object serialised once, a global
//! resourceVersion, and a bounded history of events for watches.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use serde_json::Value;

use crate::resources::{RESOURCES, ResId};

/// An object as stored: its JSON, plus what lists and the garbage collector
/// need without parsing it again.
#[derive(Debug)]
pub(crate) struct StoredObject {
    pub(crate) json: Bytes,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) uid: String,
    pub(crate) owners: Vec<String>,
    pub(crate) rv: u64,
}

impl StoredObject {
    /// Parses the stored JSON.
    pub(crate) fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept in the history for watches.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) res: ResId,
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) kind: EventType,
    pub(crate) obj: Arc<StoredObject>,
    /// The object before a modification, so filtered watches can turn
    /// changes into ADDED/DELETED as the real server does.
    pub(crate) prev: Option<Arc<StoredObject>>,
}

pub(crate) type Key = (String, String);

/// Where an object lives, by uid (for owner references).
pub(crate) type Location = (ResId, String, String);

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) objects: Vec<BTreeMap<Key, Arc<StoredObject>>>,
    pub(crate) rv: u64,
    pub(crate) history: VecDeque<Arc<Event>>,
    /// Every event with an rv above the floor is in `history`.
    pub(crate) floor: u64,
    pub(crate) window: usize,
    pub(crate) by_uid: HashMap<String, Location>,
    pub(crate) dependents: HashMap<String, HashSet<Location>>,
    /// Every Job's life, in creation order (see [`JobRecord`]).
    pub(crate) jobs: JobHistory,
}

/// One Job's life as the store saw it: when it was created and when it
/// ended (it finished, `Complete` or `Failed`, or was deleted first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels at creation.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created: std::time::Instant,
    /// When it finished or was deleted, whichever came first.
    pub ended: Option<std::time::Instant>,
}

/// The Jobs' lives, bounded: beyond [`JobHistory::MAX`] records the oldest
/// are forgotten (a simulator serving a benchmark must not grow forever).
#[derive(Debug, Default)]
pub(crate) struct JobHistory {
    records: VecDeque<JobRecord>,
    /// Index in `records` (plus `dropped`) of each running Job, by uid.
    running: HashMap<String, u64>,
    dropped: u64,
}

impl JobHistory {
    /// Records kept at most.
    pub(crate) const MAX: usize = 100_000;

    fn saw(&mut self, kind: EventType, v: &Value) {
        let uid = v["metadata"]["uid"].as_str().unwrap_or_default();
        let now = std::time::Instant::now();
        let finished = v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        });
        if kind == EventType::Added {
            let labels = v["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            self.records.push_back(JobRecord {
                namespace: v["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                name: v["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                labels,
                created: now,
                ended: finished.then_some(now),
            });
            if !finished {
                let at = self.dropped + self.records.len() as u64 - 1;
                self.running.insert(uid.to_owned(), at);
            }
            while self.records.len() > Self::MAX {
                self.records.pop_front();
                self.dropped += 1;
            }
            return;
        }
        if kind == EventType::Modified && !finished {
            return;
        }
        if let Some(at) = self.running.remove(uid)
            && let Some(i) = at.checked_sub(self.dropped)
            && let Some(record) = usize::try_from(i).ok().and_then(|i| self.records.get_mut(i))
        {
            record.ended = Some(now);
        }
    }

    pub(crate) fn records(&self) -> Vec<JobRecord> {
        self.records.iter().cloned().collect()
    }
}

impl State {
    pub(crate) fn get(&self, res: ResId, ns: &str, name: &str) -> Option<&Arc<StoredObject>> {
        self.objects[res].get(&(ns.to_string(), name.to_string()))
    }

    /// Stores `value` (or removes the object when `None`), stamping the next
    /// resourceVersion into it. Returns the stored object and the event.
    pub(crate) fn commit(
        &mut self,
        res: ResId,
        ns: &str,
        name: &str,
        value: Option<Value>,
    ) -> Arc<StoredObject> {
        self.rv += 1;
        let rv = self.rv;
        let key = (ns.to_string(), name.to_string());
        let mut prev = None;
        let (kind, obj) = match value {
            Some(mut v) => {
                v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                let obj = Arc::new(to_stored(&v, rv));
                let old = self.objects[res].insert(key, obj.clone());
                let kind = if let Some(old) = old {
                    self.unindex(res, ns, name, &old);
                    prev = Some(old);
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.index(res, ns, name, &obj);
                (kind, obj)
            }
            None => {
                let Some(old) = self.objects[res].remove(&key) else {
                    // Nothing to delete: undo the version bump.
                    self.rv -= 1;
                    return Arc::new(StoredObject {
                        json: Bytes::new(),
                        labels: vec![],
                        uid: String::new(),
                        owners: vec![],
                        rv: self.rv,
                    });
                };
                self.unindex(res, ns, name, &old);
                // A deleted object is reported with the resourceVersion of its deletion.
                let mut v = old.value();
                v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                (EventType::Deleted, Arc::new(to_stored(&v, rv)))
            }
        };
        if res == crate::resources::JOBS {
            self.jobs.saw(kind, &obj.value());
        }
        self.history.push_back(Arc::new(Event {
            rv,
            res,
            ns: ns.to_string(),
            name: name.to_string(),
            kind,
            obj: obj.clone(),
            prev,
        }));
        while self.history.len() > self.window {
            if let Some(ev) = self.history.pop_front() {
                self.floor = ev.rv;
            }
        }
        obj
    }

    fn index(&mut self, res: ResId, ns: &str, name: &str, obj: &StoredObject) {
        let loc = (res, ns.to_string(), name.to_string());
        if !obj.uid.is_empty() {
            self.by_uid.insert(obj.uid.clone(), loc.clone());
        }
        for owner in &obj.owners {
            self.dependents.entry(owner.clone()).or_default().insert(loc.clone());
        }
    }

    fn unindex(&mut self, res: ResId, ns: &str, name: &str, obj: &StoredObject) {
        let loc = (res, ns.to_string(), name.to_string());
        if self.by_uid.get(&obj.uid) == Some(&loc) {
            self.by_uid.remove(&obj.uid);
        }
        for owner in &obj.owners {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(&loc);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Events with an rv strictly above `after`, or `None` when some of
    /// them are no longer retained.
    pub(crate) fn events_after(&self, after: u64, max: usize) -> Option<Vec<Arc<Event>>> {
        if after < self.floor {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Some(self.history.range(start..).take(max).cloned().collect())
    }

    /// Forgets the whole history: watches resuming from any earlier version get 410.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }
}

fn to_stored(v: &Value, rv: u64) -> StoredObject {
    let json = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    let meta = &v["metadata"];
    let uid = meta["uid"].as_str().unwrap_or_default().to_string();
    let owners = meta["ownerReferences"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["uid"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    StoredObject { json, labels: crate::validate::labels_of(v), uid, owners, rv }
}

/// The shared store, with a notification of the latest resourceVersion.
#[derive(Debug)]
pub(crate) struct Store {
    state: RwLock<State>,
    rv_tx: tokio::sync::watch::Sender<u64>,
}

impl Store {
    pub(crate) fn new(window: usize) -> Self {
        let state = State {
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            rv: 0,
            history: VecDeque::new(),
            floor: 0,
            window: window.max(1),
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
            jobs: JobHistory::default(),
        };
        Store { state: RwLock::new(state), rv_tx: tokio::sync::watch::channel(0).0 }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` under the write lock, then tells watchers about new events.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, rv) = {
            let mut guard: RwLockWriteGuard<'_, State> =
                self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = f(&mut guard);
            (out, guard.rv)
        };
        self.rv_tx.send_if_modified(|cur| {
            if *cur != rv {
                *cur = rv;
                true
            } else {
                false
            }
        });
        out
    }

    /// A receiver that changes whenever the resourceVersion moves.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_is_bounded_and_compactable() {
        let store = Store::new(3);
        store.write(|s| {
            for i in 0..5 {
                s.commit(
                    0,
                    "",
                    &format!("n{i}"),
                    Some(json!({"metadata": {"name": format!("n{i}"), "uid": format!("u{i}")}})),
                );
            }
        });
        let s = store.read();
        assert_eq!(s.rv, 5);
        assert_eq!(s.floor, 2);
        assert!(s.events_after(1, 100).is_none());
        let evs = s.events_after(2, 100).expect("retained");
        assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![3, 4, 5]);
        drop(s);
        store.write(State::compact);
        assert!(store.read().events_after(4, 10).is_none());
        assert_eq!(store.read().events_after(5, 10).map(|v| v.len()), Some(0));
    }

    #[test]
    fn deletes_report_their_own_version_and_maintain_indexes() {
        let store = Store::new(100);
        store.write(|s| {
            s.commit(0, "", "owner", Some(json!({"metadata": {"name": "owner", "uid": "o"}})));
            s.commit(1, "ns", "dep", Some(json!({"metadata": {"name": "dep", "uid": "d", "ownerReferences": [{"uid": "o"}]}})));
        });
        assert_eq!(store.read().dependents.get("o").map(HashSet::len), Some(1));
        let deleted = store.write(|s| s.commit(1, "ns", "dep", None));
        assert_eq!(deleted.rv, 3);
        assert_eq!(deleted.value()["metadata"]["resourceVersion"], "3");
        assert!(!store.read().dependents.contains_key("o"));
        assert!(!store.read().by_uid.contains_key("d"));
    }
}
