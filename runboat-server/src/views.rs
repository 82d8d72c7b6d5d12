//! The JSON of each build as the API shows it, serialised once per change.
//!
//! `GET /builds` answers are mostly the same builds asked for again and
//! again (a repo page, a dashboard polling): building each view (links are
//! formatted strings) and serialising it was most of the server's CPU for
//! such a request (profiled at 10,000 builds: ~6 µs per build, 100 builds
//! per repo). The cache keeps each build's JSON with the index revision it
//! was made from ([`BuildIndex::revision`]), so an entry is used only while
//! the build is unchanged: never stale, with no invalidation to forget.
//! Entries of builds that changed or left are dropped in a sweep when the
//! cache outgrows the index.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;
use runboat_core::{Build, BuildIndex};

/// Cached JSON of build views, by build name, and of whole list answers.
#[derive(Debug, Default)]
pub struct ViewCache {
    entries: RwLock<HashMap<String, (u64, Bytes)>>,
    /// Whole answers by query, with the index version they were made at
    /// ([`BuildIndex::version`]): a page polled again and again while
    /// nothing changed is one lookup, with no search.
    answers: Mutex<HashMap<String, (u64, Bytes)>>,
}

/// Whole answers kept at most, and their bytes at most (the answer cache
/// is emptied when either would be passed); an answer larger than
/// `ANSWER_MAX_BYTES` (every build of a large index) is not kept.
const ANSWERS_MAX: usize = 128;
const ANSWERS_MAX_BYTES: usize = 8 << 20;
const ANSWER_MAX_BYTES: usize = 1 << 20;

impl ViewCache {
    /// The answer for the query `key` at the index's current version, made
    /// by `make` when it is not cached (`key` must identify the query's
    /// result set and order completely).
    pub fn answer(&self, index: &BuildIndex, key: &str, make: impl FnOnce() -> Bytes) -> Bytes {
        let version = index.version();
        {
            let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((v, body)) = answers.get(key)
                && *v == version
            {
                return body.clone();
            }
        }
        let body = make();
        if body.len() > ANSWER_MAX_BYTES {
            return body;
        }
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = answers.values().map(|(_, b)| b.len()).sum();
        if answers.len() >= ANSWERS_MAX || held + body.len() > ANSWERS_MAX_BYTES {
            answers.clear();
        }
        answers.insert(key.to_owned(), (version, body.clone()));
        body
    }

    /// The JSON array of `builds` (each with its revision in `index`), in
    /// their order; `view` serialises a build the cache does not have.
    pub fn json_array(
        &self,
        index: &BuildIndex,
        builds: &[(&Build, u64)],
        view: impl Fn(&Build) -> Bytes,
    ) -> Vec<u8> {
        let mut parts: Vec<Option<Bytes>> = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            builds
                .iter()
                .map(|(b, rev)| match entries.get(&b.name) {
                    Some((r, json)) if r == rev => Some(json.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut fresh = Vec::new();
        for (part, (b, rev)) in parts.iter_mut().zip(builds) {
            if part.is_none() {
                let json = view(b);
                fresh.push((b.name.clone(), *rev, json.clone()));
                *part = Some(json);
            }
        }
        if !fresh.is_empty() {
            self.insert(index, fresh);
        }
        let size = parts.iter().flatten().map(|p| p.len() + 1).sum::<usize>() + 2;
        let mut out = Vec::with_capacity(size);
        out.push(b'[');
        for (i, part) in parts.iter().flatten().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
        out.push(b']');
        out
    }

    /// The JSON of one build.
    pub fn json_one(
        &self,
        index: &BuildIndex,
        build: &Build,
        rev: u64,
        view: impl Fn(&Build) -> Bytes,
    ) -> Bytes {
        let cached = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            entries.get(&build.name).filter(|(r, _)| *r == rev).map(|(_, json)| json.clone())
        };
        cached.unwrap_or_else(|| {
            let json = view(build);
            self.insert(index, vec![(build.name.clone(), rev, json.clone())]);
            json
        })
    }

    fn insert(&self, index: &BuildIndex, fresh: Vec<(String, u64, Bytes)>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        for (name, rev, json) in fresh {
            entries.insert(name, (rev, json));
        }
        // Outdated entries (changed or removed builds) are swept once they
        // could make up half of the cache: amortised O(1) per insert, and
        // after an insert the cache holds at most about twice the index
        // (after a mass undeploy, until the next insert, it may hold more).
        if entries.len() > 2 * index.len() + 256 {
            entries.retain(|name, (rev, _)| index.revision(name) == Some(*rev));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use runboat_core::{BuildStatus, CommitInfo, InitStatus};

    use super::*;

    fn build(name: &str) -> Build {
        let commit = CommitInfo::new("oca/x", "16.0", None, &"a".repeat(40)).expect("commit");
        Build {
            name: name.to_owned(),
            deployment_name: name.to_owned(),
            commit_info: commit,
            status: BuildStatus::Stopped,
            init_status: InitStatus::Succeeded,
            desired_replicas: 0,
            created: jiff::Timestamp::UNIX_EPOCH,
            last_scaled: None,
            pinned: false,
            route: None,
        }
    }

    fn json(b: &Build) -> Bytes {
        Bytes::from(format!("{{\"name\":\"{}\",\"status\":\"{}\"}}", b.name, b.status))
    }

    #[test]
    fn serves_each_build_once_per_revision_and_never_stale() {
        let mut index = BuildIndex::new();
        index.upsert(build("b1"));
        index.upsert(build("b2"));
        let cache = ViewCache::default();
        let calls = Cell::new(0);
        let view = |b: &Build| {
            calls.set(calls.get() + 1);
            json(b)
        };
        let all = |index: &BuildIndex| {
            let found: Vec<(&Build, u64)> = ["b1", "b2"]
                .iter()
                .filter_map(|n| Some((index.get(n)?, index.revision(n)?)))
                .collect();
            String::from_utf8(cache.json_array(index, &found, view)).expect("utf-8")
        };
        let first = all(&index);
        assert_eq!(first, r#"[{"name":"b1","status":"stopped"},{"name":"b2","status":"stopped"}]"#);
        assert_eq!(calls.get(), 2);
        assert_eq!(all(&index), first);
        assert_eq!(calls.get(), 2, "unchanged builds come from the cache");

        let mut changed = build("b2");
        changed.status = BuildStatus::Started;
        index.upsert(changed);
        assert_eq!(
            all(&index),
            r#"[{"name":"b1","status":"stopped"},{"name":"b2","status":"started"}]"#
        );
        assert_eq!(calls.get(), 3, "only the changed build is serialised again");

        let rev = index.revision("b1").expect("revision");
        let one = cache.json_one(&index, index.get("b1").expect("b1"), rev, view);
        assert_eq!(&one[..], br#"{"name":"b1","status":"stopped"}"#);
        assert_eq!(calls.get(), 3);
        assert_eq!(&cache.json_array(&index, &[], view)[..], b"[]");
    }

    #[test]
    fn whole_answers_last_exactly_as_long_as_the_index_version() {
        let mut index = BuildIndex::new();
        index.upsert(build("b1"));
        let cache = ViewCache::default();
        let calls = Cell::new(0);
        let make = |index: &BuildIndex| {
            calls.set(calls.get() + 1);
            Bytes::from(index.iter().map(|b| b.name.clone()).collect::<Vec<_>>().join(","))
        };
        let ask = |index: &BuildIndex, key: &str| cache.answer(index, key, || make(index));
        assert_eq!(&ask(&index, "all")[..], b"b1");
        assert_eq!(&ask(&index, "all")[..], b"b1");
        assert_eq!(calls.get(), 1, "the same query at the same version is cached");
        assert_eq!(&ask(&index, "other")[..], b"b1");
        assert_eq!(calls.get(), 2, "another query is another answer");
        index.upsert(build("b2"));
        let mut names: Vec<String> = String::from_utf8(ask(&index, "all").to_vec())
            .expect("utf-8")
            .split(',')
            .map(str::to_owned)
            .collect();
        names.sort();
        assert_eq!(names, ["b1", "b2"], "an added build is seen");
        index.remove("b1");
        assert_eq!(&ask(&index, "all")[..], b"b2", "a removed build is gone");
        // An upsert that changes nothing keeps the answer.
        let n = calls.get();
        index.upsert(build("b2"));
        assert_eq!(&ask(&index, "all")[..], b"b2");
        assert_eq!(calls.get(), n);
        // Bounded in count and bytes; a huge answer is not kept.
        for i in 0..(2 * ANSWERS_MAX) {
            ask(&index, &format!("q{i}"));
        }
        assert!(cache.answers.lock().expect("lock").len() <= ANSWERS_MAX);
        let huge = || Bytes::from(vec![b' '; ANSWER_MAX_BYTES + 1]);
        assert_eq!(cache.answer(&index, "huge", huge).len(), ANSWER_MAX_BYTES + 1);
        assert!(!cache.answers.lock().expect("lock").contains_key("huge"));
        let big = || Bytes::from(vec![b' '; ANSWER_MAX_BYTES]);
        for i in 0..20 {
            cache.answer(&index, &format!("big{i}"), big);
        }
        let held: usize = cache.answers.lock().expect("lock").values().map(|(_, b)| b.len()).sum();
        assert!(held <= ANSWERS_MAX_BYTES, "{held} bytes held");
    }

    #[test]
    fn a_cache_that_outlives_its_index_never_serves_the_old_one() {
        let cache = ViewCache::default();
        let mut old = BuildIndex::new();
        old.upsert(build("b1"));
        let first = cache.answer(&old, "all", || Bytes::from_static(b"old"));
        assert_eq!(&first[..], b"old");
        // A new index with the same history: other revisions and version.
        let mut new = BuildIndex::new();
        new.upsert(build("b1"));
        assert_ne!(new.version(), old.version());
        assert_ne!(new.revision("b1"), old.revision("b1"));
        assert_eq!(&cache.answer(&new, "all", || Bytes::from_static(b"new"))[..], b"new");
    }

    #[test]
    fn outdated_entries_are_swept_as_the_index_moves_on() {
        let mut index = BuildIndex::new();
        let cache = ViewCache::default();
        for i in 0..2_000 {
            let name = format!("b{i}");
            index.upsert(build(&name));
            let b = index.get(&name).expect("just added");
            let rev = index.revision(&name).expect("revision");
            cache.json_one(&index, b, rev, json);
            index.remove(&name);
        }
        let held = cache.entries.read().expect("lock").len();
        assert!(held <= 2 * index.len() + 257, "{held} entries for an empty index");
    }
}
