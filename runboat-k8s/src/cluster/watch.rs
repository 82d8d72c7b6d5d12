//! Watch streams: kube's watcher mapped to runboat-core's [`ClusterEvent`]s.
//!
//! The guarantees the controller relies on:
//!
//! - The first item is a [`ClusterEvent::Relisted`] with the complete state:
//!   the watcher's `Init` … `InitApply` … `InitDone` are collected into one
//!   listing, so nothing from before the listing is emitted after it.
//! - After a dropped connection kube's watcher resumes from the last
//!   resourceVersion it saw (bookmarks keep it fresh): no change is lost.
//! - On **any** error (410 Gone after a history compaction, a failed list or
//!   watch, a decoding error) the watcher is thrown away and a fresh one
//!   lists again, after kube's default backoff: the consumer gets a new
//!   complete [`ClusterEvent::Relisted`] instead of guessing what was missed.

use std::fmt::Debug;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use kube::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use runboat_core::ClusterEvent;
use runboat_core::contract::LABEL_BUILD;
use serde::de::DeserializeOwned;

/// The watcher configuration: runboat's objects only, bookmarks on.
pub(crate) fn watcher_config() -> watcher::Config {
    watcher::Config::default().labels(LABEL_BUILD)
}

struct State<K: 'static, T> {
    api: Api<K>,
    config: watcher::Config,
    convert: fn(&K) -> Option<T>,
    inner: Option<BoxStream<'static, watcher::Result<Event<K>>>>,
    /// Objects of the listing in progress (between `Init` and `InitDone`).
    listing: Option<Vec<T>>,
    backoff: DefaultBackoff,
}

/// An endless stream of events of the objects `api` reaches (filtered by
/// `config`), each converted by `convert` (objects it returns `None` for
/// are skipped).
pub(crate) fn events<K, T>(
    api: Api<K>,
    config: watcher::Config,
    convert: fn(&K) -> Option<T>,
) -> BoxStream<'static, ClusterEvent<T>>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: Send + 'static,
{
    let state = State {
        api,
        config,
        convert,
        inner: None,
        listing: None,
        backoff: DefaultBackoff::default(),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            let inner = st
                .inner
                .get_or_insert_with(|| watcher::watcher(st.api.clone(), st.config.clone()).boxed());
            match inner.next().await {
                Some(Ok(Event::Init)) => st.listing = Some(Vec::new()),
                Some(Ok(Event::InitApply(obj))) => {
                    if let Some(facts) = (st.convert)(&obj) {
                        st.listing.get_or_insert_with(Vec::new).push(facts);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    let all = st.listing.take().unwrap_or_default();
                    // A complete listing: the watch works again.
                    st.backoff.reset();
                    return Some((ClusterEvent::Relisted(all), st));
                }
                Some(Ok(Event::Apply(obj))) => {
                    if let Some(facts) = (st.convert)(&obj) {
                        return Some((ClusterEvent::Applied(facts), st));
                    }
                }
                Some(Ok(Event::Delete(obj))) => {
                    if let Some(facts) = (st.convert)(&obj) {
                        return Some((ClusterEvent::Deleted(facts), st));
                    }
                }
                Some(Err(err)) => {
                    // Start over with a complete listing rather than trust a
                    // resumed watch after an error.
                    let wait = st.backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(
                        error = %err,
                        retry_in = ?wait,
                        "watch failed; listing again"
                    );
                    st.inner = None;
                    st.listing = None;
                    tokio::time::sleep(wait).await;
                }
                // kube's watcher never ends; if it did, start a fresh one.
                None => {
                    st.inner = None;
                    st.listing = None;
                }
            }
        }
    })
    .boxed()
}
