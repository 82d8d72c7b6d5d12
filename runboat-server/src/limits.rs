//! Bounds on what clients can make the server hold: connections and event
//! streams (counted globally and per client address), rate limits of the
//! build actions, and the remembered webhook delivery IDs.
//!
//! Everything here is a plain data structure behind a mutex, sized by
//! [`Limits`]; nothing grows with what a client sends beyond the caps, and
//! no per-request work is added to the read endpoints.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};

/// The limits of the public surface (server command line options).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a request's whole head; also how long an
    /// idle keep-alive connection is kept (hyper starts this timer as soon
    /// as it waits for the next request).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body.
    pub body_timeout: Duration,
    /// Time a handler has to produce the response head (streams count
    /// only until their head).
    pub request_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections at most from one client address.
    pub max_connections_per_client: usize,
    /// Open event streams at most.
    pub max_event_streams: usize,
    /// Open event streams at most for one client.
    pub max_event_streams_per_client: usize,
    /// A header whose (last) address is the client's, set by a trusted
    /// reverse proxy; `None`: the peer address of the connection.
    pub client_ip_header: Option<HeaderName>,
    /// Budget of a webhook answer (GitHub gives up after 10 s).
    pub webhook_budget: Duration,
    /// Build actions (start, stop, reset) a client may ask per minute.
    pub actions_per_client_per_minute: u32,
    /// Build actions one build may receive per minute.
    pub actions_per_build_per_minute: u32,
    /// Webhook delivery IDs remembered to answer replays with a no-op.
    pub remembered_deliveries: usize,
    /// Requests (deploys, undeploys, actions) waiting in the controller at
    /// most; beyond, they are refused at once with 503 + `Retry-After`.
    pub max_queued_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_client: 128,
            max_event_streams: 512,
            max_event_streams_per_client: 16,
            client_ip_header: None,
            webhook_budget: Duration::from_secs(8),
            actions_per_client_per_minute: 30,
            actions_per_build_per_minute: 10,
            remembered_deliveries: 10_000,
            max_queued_requests: 4096,
        }
    }
}

/// The peer address of a request's connection (set by the server's accept
/// loop; absent in router tests without a socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client address of a request: the last address of the trusted proxy
/// header when one is configured and present, else the peer address.
/// `None` only without a socket (router tests).
pub fn client_ip(limits: &Limits, headers: &HeaderMap, peer: Option<&PeerAddr>) -> Option<IpAddr> {
    if let Some(name) = &limits.client_ip_header
        && let Some(ip) = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return Some(ip);
    }
    peer.map(|p| p.0.ip())
}

/// The address a client is rate-limited under: an IPv4 address, or the
/// /64 network of an IPv6 one (one site gets a whole /64).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global cap is reached: 503.
    Full,
    /// This client's cap is reached: 429.
    ClientFull,
}

/// Counted slots: at most `max` in all and `per_client` per address.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_client: usize,
    open: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Slots {
    /// Slots with these caps.
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Slots {
            max,
            per_client,
            open: AtomicUsize::new(0),
            by_client: Mutex::new(HashMap::new()),
        })
    }

    /// Slots open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for `client` (`None`: counted globally only), released
    /// when the guard drops.
    pub fn acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Result<SlotGuard, Refusal> {
        let max = self.max;
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(Refusal::Full);
        }
        if let Some(ip) = client {
            let mut map = self.by_client.lock().unwrap_or_else(PoisonError::into_inner);
            let count = map.entry(ip).or_insert(0);
            if *count >= self.per_client {
                drop(map);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::ClientFull);
            }
            *count += 1;
        }
        Ok(SlotGuard { slots: self.clone(), client })
    }
}

/// One taken slot.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
    client: Option<IpAddr>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            let mut map = self.slots.by_client.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = map.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Fixed-window rate limits: at most `per_minute` hits per key in each
/// minute. The table is emptied at each new window, so it holds at most
/// the keys of one minute (bounded by `MAX_KEYS`, beyond which new keys
/// are refused: a flood of addresses cannot grow it).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    window: Mutex<(Instant, HashMap<String, u32>)>,
}

const MAX_KEYS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// A limiter of `per_minute` hits per key (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, window: Mutex::new((Instant::now(), HashMap::new())) }
    }

    /// Counts a hit of `key`: `Err(seconds until the window ends)` when over
    /// the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut guard = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, counts) = &mut *guard;
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            counts.clear();
        }
        let retry_after = (WINDOW.saturating_sub(now.duration_since(*start))).as_secs().max(1);
        if let Some(count) = counts.get_mut(key) {
            if *count >= self.per_minute {
                return Err(retry_after);
            }
            *count += 1;
            return Ok(());
        }
        if counts.len() >= MAX_KEYS {
            return Err(retry_after);
        }
        counts.insert(key.to_owned(), 1);
        Ok(())
    }
}

/// The last `capacity` webhook delivery IDs seen (oldest forgotten first).
#[derive(Debug)]
pub struct Deliveries {
    capacity: usize,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// Longest delivery ID remembered (GitHub's are UUIDs).
const MAX_DELIVERY_ID: usize = 128;

impl Deliveries {
    /// Remembers at most `capacity` IDs.
    pub fn new(capacity: usize) -> Self {
        Deliveries { capacity, seen: Mutex::new((HashSet::new(), VecDeque::new())) }
    }

    /// Whether `id` was seen; remembers it. An ID longer than
    /// [`MAX_DELIVERY_ID`] is never remembered (and never a replay).
    pub fn seen_before(&self, id: &str) -> bool {
        if self.capacity == 0 || id.len() > MAX_DELIVERY_ID {
            return false;
        }
        let mut guard = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.contains(id) {
            return true;
        }
        if order.len() >= self.capacity
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        set.insert(id.to_owned());
        order.push_back(id.to_owned());
        false
    }

    /// Forgets `id` (its delivery could not be accepted: GitHub's redelivery
    /// must be processed).
    pub fn forget(&self, id: &str) {
        let mut guard = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.remove(id) {
            order.retain(|o| o != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_globally_and_per_client() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = slots.acquire(Some(a)).expect("a1");
        let _a2 = slots.acquire(Some(a)).expect("a2");
        assert_eq!(slots.acquire(Some(a)).expect_err("a3"), Refusal::ClientFull);
        let _b1 = slots.acquire(Some(b)).expect("b1");
        assert_eq!(slots.acquire(Some(b)).expect_err("full"), Refusal::Full);
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _a3 = slots.acquire(Some(a)).expect("a again");
    }

    #[test]
    fn rate_limiter_counts_per_key() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.hit("x").is_ok());
        assert!(limiter.hit("x").is_ok());
        let retry = limiter.hit("x").expect_err("over");
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(limiter.hit("y").is_ok());
        assert!(RateLimiter::new(0).hit("x").is_ok());
    }

    #[test]
    fn ipv6_clients_are_limited_by_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(rate_key(a), rate_key(b));
        assert_eq!(rate_key(a).to_string(), "2001:db8:1:2::");
        let v4: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(rate_key(v4), v4);
    }

    #[test]
    fn deliveries_are_bounded() {
        let d = Deliveries::new(2);
        assert!(!d.seen_before("a"));
        assert!(d.seen_before("a"));
        assert!(!d.seen_before("b"));
        assert!(!d.seen_before("c"));
        // "a" was forgotten (oldest).
        assert!(!d.seen_before("a"));
        d.forget("a");
        assert!(!d.seen_before("a"));
        assert!(!d.seen_before(&"x".repeat(200)));
        assert!(!d.seen_before(&"x".repeat(200)));
    }

    #[test]
    fn the_proxy_header_is_used_only_when_configured() {
        let peer = PeerAddr("127.0.0.1:5000".parse().expect("addr"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().expect("value"));
        let limits = Limits::default();
        assert_eq!(client_ip(&limits, &headers, Some(&peer)), Some(peer.0.ip()));
        let limits = Limits {
            client_ip_header: Some(HeaderName::from_static("x-forwarded-for")),
            ..Limits::default()
        };
        assert_eq!(client_ip(&limits, &headers, Some(&peer)), "5.6.7.8".parse().ok());
        assert_eq!(client_ip(&limits, &HeaderMap::new(), Some(&peer)), Some(peer.0.ip()));
    }
}
