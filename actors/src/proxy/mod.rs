//! Proxy nodes: a node started with `upstreams` accepts clients as
//! usual and mirrors what they need onto the upstream nodes.
//!
//! - Each topic belongs to one upstream, chosen by rendezvous hashing
//!   ([`Ring`]): every proxy that lists the same upstreams (in any order)
//!   maps a topic to the same one, and adding an upstream moves only the
//!   topics that now prefer it. Upstreams thus also shard the topic space.
//! - One [`upstream::UpstreamLink`] actor per upstream holds one TCP
//!   connection and speaks the ordinary client protocol over it: it
//!   subscribes upstream to the union of the local clients' topics of that
//!   upstream (first local subscriber subscribes, last one leaving
//!   unsubscribes), forwards local publishes, polls `get messages` and
//!   re-publishes what arrives into the local router under its own id,
//!   which no local client has, so every local subscriber gets it.
//! - [`Proxy`] is the router's [`TopicObserver`]: the router tells it, under
//!   the shard locks, of topics gained and lost and of local publishes, and
//!   it passes them on with non-blocking `do_send`s. It also answers the
//!   client queues' retroactive requests and the connections' admission
//!   check, and adds the links' figures to `stats`.
//!
//! What is guaranteed, and how an upstream's failure is handled, is told in
//! `docs/DESIGN.md` ("Proxy nodes") and in [`upstream`].

pub mod reply;
pub mod upstream;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use actix_rt::Arbiter;
use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use kraken_protocol::PublishEntry;
use slog::info;

use actix::dev::channel::{channel, AddressReceiver};

use crate::env::{Env, ProxyHooks};
use crate::message::Message;
use crate::node::Node;
use crate::router::{fnv1a, TopicObserver};
use crate::supervision::ChildDown;
use upstream::{Forward, Hold, RestartLink, Retro, Settle, UpstreamLink};

/// Topic → upstream by rendezvous (highest random weight) hashing.
#[derive(Debug, Clone)]
pub struct Ring {
    /// The upstreams as configured (`host:port`); a topic's owner is an
    /// index into this list.
    names: Vec<String>,
    /// Per upstream, the hash of its name: its share of the hash space.
    seeds: Vec<u64>,
}

/// The splitmix64 finaliser: a bijection whose output bits all depend on
/// all input bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Ring {
    pub fn new(names: &[String]) -> Ring {
        Ring {
            names: names.to_vec(),
            seeds: names.iter().map(|n| fnv1a(n.as_bytes())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The index of the upstream that owns `topic`: the one whose
    /// `mix(hash(topic) ^ seed)` is highest (ties, which need equal 64-bit
    /// scores, go to the smaller name, so the order of the list never
    /// matters).
    pub fn owner(&self, topic: &[u8]) -> usize {
        if self.names.len() <= 1 {
            return 0;
        }
        let h = fnv1a(topic);
        let mut best = 0;
        let mut best_score = mix(h ^ self.seeds[0]);
        for i in 1..self.names.len() {
            let score = mix(h ^ self.seeds[i]);
            if score > best_score || (score == best_score && self.names[i] < self.names[best]) {
                best = i;
                best_score = score;
            }
        }
        best
    }
}

/// The upstream (as listed) that owns `topic` among `upstreams`: what every
/// proxy configured with these upstreams computes.
pub fn owner_of(topic: &[u8], upstreams: &[String]) -> usize {
    Ring::new(upstreams).owner(topic)
}

/// What the node and one link share about it.
#[derive(Debug, Default)]
pub struct LinkShared {
    /// Bytes of forwarded publishes not yet acknowledged by the upstream
    /// (in the link's mailbox, outbox or in flight). Publishes for the
    /// link's topics are refused past `max_queue_bytes`.
    pub backlog: AtomicUsize,
    /// The link is connected and has resubscribed.
    pub connected: AtomicBool,
}

/// Figures for `stats`.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Messages received from upstreams and relayed locally.
    pub relayed: AtomicU64,
    /// Connections to upstreams made (first ones included).
    pub connects: AtomicU64,
    /// Upstream connections lost.
    pub lost: AtomicU64,
    /// Reconnections whose missed messages were recovered by retro_subscribe.
    pub recovered: AtomicU64,
    /// Reconnections that could not be recovered (restart or NOT_FOUND).
    pub unrecoverable: AtomicU64,
    /// Clients closed because an upstream of theirs was lost for good.
    pub clients_closed: AtomicU64,
    /// Publishes refused because an upstream's backlog was full.
    pub refused_publishes: AtomicU64,
}

struct LinkHandle {
    addr: Addr<UpstreamLink>,
    shared: Arc<LinkShared>,
}

/// A proxy node's upstream links; the router's [`TopicObserver`].
pub struct Proxy {
    ring: Arc<Ring>,
    links: Vec<LinkHandle>,
    /// Forward backlog (bytes) per link past which publishes are refused.
    backlog_limit: usize,
    pub counters: Arc<ProxyCounters>,
}

/// Starts one [`UpstreamLink`] per upstream (each on its own arbiter) and
/// makes `node` a proxy: its router reports to the returned [`Proxy`].
/// Called by the supervisor before the listener starts, and only when
/// `upstreams` is not empty.
/// A proxy's links, created before the router (whose shards report to
/// them) and started after it (they publish through it).
pub struct Links {
    pub proxy: Arc<Proxy>,
    receivers: Vec<AddressReceiver<UpstreamLink>>,
    ids: Vec<u64>,
}

impl Links {
    /// The links' mailboxes and the observer that feeds them.
    pub fn new(node: &Arc<Node>) -> Links {
        let ring = Arc::new(Ring::new(&node.settings.upstreams));
        let counters = Arc::new(ProxyCounters::default());
        let mut receivers = Vec::new();
        let mut ids = Vec::new();
        let links = (0..ring.len())
            .map(|_| {
                let (tx, rx) = channel::<UpstreamLink>(16);
                receivers.push(rx);
                ids.push(node.next_client_id());
                LinkHandle {
                    addr: Addr::new(tx),
                    shared: Arc::new(LinkShared::default()),
                }
            })
            .collect();
        let proxy = Arc::new(Proxy {
            ring: ring.clone(),
            links,
            backlog_limit: node.settings.max_queue_bytes,
            counters,
        });
        info!(node.log, "proxy node: topics are held on upstreams";
            "upstreams" => ring.names.join(","));
        Links {
            proxy,
            receivers,
            ids,
        }
    }

    /// Starts each link on an arbiter of its own.
    pub fn start(self, env: Arc<Env>, supervisor: Recipient<ChildDown>) {
        let proxy = self.proxy;
        for (index, (rx, id)) in self.receivers.into_iter().zip(self.ids).enumerate() {
            let arbiter = Arbiter::new();
            let (env, sup) = (env.clone(), supervisor.clone());
            let shared = proxy.links[index].shared.clone();
            let counters = proxy.counters.clone();
            let name = proxy.ring.name(index).to_string();
            let ring = proxy.ring.clone();
            arbiter.spawn_fn(move || {
                let ctx = Context::with_receiver(rx);
                let me = ctx.address().recipient();
                ctx.run(UpstreamLink::new(
                    env, ring, index, name, id, shared, counters, sup, me,
                ));
            });
        }
    }
}

impl Proxy {
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Restarts link `i` (its supervisor's decision).
    pub fn restart_link(&self, i: usize) {
        self.links[i].addr.do_send(RestartLink);
    }

    /// Fault injection: makes every link panic.
    pub fn inject_panic(&self) {
        for l in &self.links {
            l.addr.do_send(upstream::Panic);
        }
    }

    /// Groups `topics` by owning link.
    fn by_owner(&self, topics: Vec<Bytes>) -> Vec<(usize, Vec<Bytes>)> {
        if self.links.len() == 1 {
            return vec![(0, topics)];
        }
        let mut groups: Vec<Vec<Bytes>> = vec![Vec::new(); self.links.len()];
        for t in topics {
            groups[self.ring.owner(&t)].push(t);
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }

    fn hold(&self, topics: Vec<Bytes>, on: bool) {
        for (i, topics) in self.by_owner(topics) {
            self.links[i].addr.do_send(Hold { topics, on });
        }
    }

    /// Whether the publishes of `entries` may be accepted: refused (all of
    /// them) if a link that one of them goes to has a full backlog, so a
    /// dead or slow upstream costs the publisher a `SERVER_ERROR`, never
    /// memory without bound or a silent loss.
    pub fn admit(&self, entries: &[PublishEntry]) -> bool {
        let full =
            |i: usize| self.links[i].shared.backlog.load(Ordering::Relaxed) >= self.backlog_limit;
        if !(0..self.links.len()).any(full) {
            return true;
        }
        let ok = entries
            .iter()
            .all(|e| e.topics.iter().all(|t| !full(self.ring.owner(t))));
        if !ok {
            self.counters
                .refused_publishes
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Replays upstream what `topics` missed since `horizon_ns` (a client's
    /// `register` or `retro_subscribe`): resolves to false if an upstream
    /// cannot prove nothing was lost (`NOT_FOUND`, or it is unreachable).
    pub fn retro(
        &self,
        topics: Vec<Bytes>,
        horizon_ns: i128,
    ) -> impl std::future::Future<Output = bool> + 'static {
        let asks: Vec<_> = if topics.is_empty() {
            Vec::new()
        } else {
            self.by_owner(topics)
                .into_iter()
                .map(|(i, topics)| self.links[i].addr.send(Retro { topics, horizon_ns }))
                .collect()
        };
        async move {
            join_all(asks)
                .await
                .into_iter()
                .all(|answer| answer.unwrap_or(false))
        }
    }

    /// Resolves once the upstreams hold `topics` (a local subscribe's
    /// answer waits for it; see [`Settle`]).
    pub fn settle(&self, topics: Vec<Bytes>) -> impl std::future::Future<Output = ()> + 'static {
        let asks: Vec<_> = if topics.is_empty() {
            Vec::new()
        } else {
            self.by_owner(topics)
                .into_iter()
                .map(|(i, topics)| self.links[i].addr.send(Settle { topics }))
                .collect()
        };
        async move {
            join_all(asks).await;
        }
    }

    /// `stats` lines of a proxy.
    pub fn stats(&self) -> Vec<(Cow<'static, str>, String)> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let connected = self
            .links
            .iter()
            .filter(|l| l.shared.connected.load(Ordering::Relaxed))
            .count();
        let backlog: usize = self
            .links
            .iter()
            .map(|l| l.shared.backlog.load(Ordering::Relaxed))
            .sum();
        vec![
            ("upstreams".into(), self.links.len().to_string()),
            ("upstreams_connected".into(), connected.to_string()),
            ("upstream_connects".into(), get(&c.connects)),
            ("upstream_lost".into(), get(&c.lost)),
            ("upstream_recovered".into(), get(&c.recovered)),
            ("upstream_unrecoverable".into(), get(&c.unrecoverable)),
            ("upstream_clients_closed".into(), get(&c.clients_closed)),
            ("upstream_messages_relayed".into(), get(&c.relayed)),
            ("upstream_backlog_bytes".into(), backlog.to_string()),
            (
                "upstream_refused_publishes".into(),
                get(&c.refused_publishes),
            ),
        ]
    }
}

impl ProxyHooks for Proxy {
    fn admit(&self, entries: &[PublishEntry]) -> bool {
        Proxy::admit(self, entries)
    }

    fn settle(&self, topics: Vec<Bytes>) -> BoxFuture<'static, ()> {
        Box::pin(Proxy::settle(self, topics))
    }

    fn retro(&self, topics: Vec<Bytes>, horizon_ns: i128) -> BoxFuture<'static, bool> {
        Box::pin(Proxy::retro(self, topics, horizon_ns))
    }

    fn stats(&self) -> Vec<(Cow<'static, str>, String)> {
        Proxy::stats(self)
    }
}

impl TopicObserver for Proxy {
    fn gained(&self, topics: Vec<Bytes>) {
        self.hold(topics, true);
    }

    fn lost(&self, topics: Vec<Bytes>) {
        self.hold(topics, false);
    }

    fn published(&self, msg: &Arc<Message>) {
        let send = |i: usize, matched: Option<Vec<u32>>| {
            let link = &self.links[i];
            let forward = Forward::new(msg.clone(), matched);
            link.shared
                .backlog
                .fetch_add(forward.bytes(), Ordering::Relaxed);
            link.addr.do_send(forward);
        };
        if self.links.len() == 1 {
            return send(0, None);
        }
        let owners: Vec<usize> = msg.topics.iter().map(|t| self.ring.owner(t)).collect();
        if owners.iter().all(|&o| o == owners[0]) {
            return send(owners[0], None);
        }
        // Topics on several upstreams: each gets the message with its own
        // topics (a subscriber elsewhere holding topics on two of them then
        // gets two entries; see docs/DESIGN.md).
        let mut seen: Vec<usize> = owners.clone();
        seen.sort_unstable();
        seen.dedup();
        for o in seen {
            let matched = (0..owners.len() as u32)
                .filter(|&i| owners[i as usize] == o)
                .collect();
            send(o, Some(matched));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:12355")).collect()
    }

    #[test]
    fn owner_ignores_the_order_of_the_list() {
        let a = names(5);
        let mut b = a.clone();
        b.reverse();
        for t in 0..2000 {
            let topic = format!("topic-{t}");
            let oa = owner_of(topic.as_bytes(), &a);
            let ob = owner_of(topic.as_bytes(), &b);
            assert_eq!(a[oa], b[ob], "{topic}");
        }
    }

    #[test]
    fn topics_spread_evenly() {
        let ring = Ring::new(&names(4));
        let mut count = [0usize; 4];
        for t in 0..40_000 {
            count[ring.owner(format!("task:{t}").as_bytes())] += 1;
        }
        for c in count {
            assert!((9_000..11_000).contains(&c), "uneven spread: {count:?}");
        }
    }

    #[test]
    fn adding_an_upstream_moves_only_its_share() {
        let before = Ring::new(&names(4));
        let after = Ring::new(&names(5));
        let mut moved = 0;
        for t in 0..40_000 {
            let topic = format!("task:{t}");
            let (b, a) = (
                before.owner(topic.as_bytes()),
                after.owner(topic.as_bytes()),
            );
            if a != b {
                assert_eq!(a, 4, "{topic} moved between old upstreams");
                moved += 1;
            }
        }
        // About a fifth of the topics move, all to the new upstream.
        assert!((7_000..9_000).contains(&moved), "moved {moved}");
    }

    #[test]
    fn one_upstream_owns_everything() {
        let ring = Ring::new(&names(1));
        assert_eq!(ring.owner(b"x"), 0);
        assert_eq!(ring.owner(b""), 0);
    }
}
