//! The `kraken-client` library against the real node: the async `Client`'s
//! requests and replies, and the `Subscriber`'s stream of events, its
//! replay after a lost connection and its "reload everything" after a node
//! restart.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Node, NodeOptions};
use kraken_client::{Client, Event, Message, Retro, Subscriber, SubscriberOptions};
use tokio::time::timeout;

/// How long a subscriber may take to yield an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn message(topics: &[&str], payload: &str) -> Event {
    Event::Message {
        topics: topics.iter().map(|t| b(t)).collect(),
        payload: b(payload),
    }
}

/// The next event, or a panic after [`EVENT_TIMEOUT`].
async fn next_event(sub: &mut Subscriber) -> Event {
    timeout(EVENT_TIMEOUT, sub.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no event within {EVENT_TIMEOUT:?} (reconnects {}, last error {:?})",
                sub.reconnects(),
                sub.last_error().map(|e| e.to_string())
            )
        })
}

/// Polls `client` until `n` messages arrived (bounded).
async fn poll_n(client: &mut Client, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < n {
        got.extend(client.poll().await.expect("poll"));
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} messages: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got
}

#[tokio::test]
async fn client_requests_and_replies() {
    let node = Node::start(&[]);
    let addr = node.addr();
    let mut sub = Client::connect(addr).await.unwrap();
    let mut publisher = Client::connect(addr).await.unwrap();

    assert_eq!(sub.subscribe(["a", "b"]).await.unwrap(), Retro::Complete);
    assert!(sub.poll().await.unwrap().is_empty());
    publisher.publish(["a"], "one").await.unwrap();
    publisher
        .publish_many(vec![
            Message::new(["b", "zzz"], "two\r\nEND\r\n"),
            Message::new(["zzz"], "nobody"),
        ])
        .await
        .unwrap();
    let got = poll_n(&mut sub, 2).await;
    assert_eq!(
        got,
        vec![
            Message::new(["a"], "one"),
            Message::new(["b"], "two\r\nEND\r\n")
        ]
    );

    sub.unsubscribe(["a"]).await.unwrap();
    publisher.publish(["a"], "gone").await.unwrap();
    publisher.publish(["b"], "kept").await.unwrap();
    assert_eq!(poll_n(&mut sub, 1).await, vec![Message::new(["b"], "kept")]);

    let stats = sub.stats().await.unwrap();
    let pid = stats
        .iter()
        .find(|(n, _)| n == "pid")
        .map(|(_, v)| v.clone());
    assert_eq!(pid, Some(node.pid().to_string()), "{stats:?}");
    assert!(!sub.version().await.unwrap().is_empty());

    // A topic that cannot be framed is refused before anything is sent;
    // one the node refuses is an error too; the connection stays usable.
    let bad = sub.subscribe(["has space"]).await.unwrap_err();
    assert!(bad.connection_usable(), "{bad}");
    let long = "t".repeat(2000);
    let refused = sub.subscribe([long.as_str()]).await.unwrap_err();
    assert!(refused.to_string().contains("CLIENT_ERROR"), "{refused}");
    assert!(refused.connection_usable());
    assert!(sub.poll().await.unwrap().is_empty());
    sub.quit().await.unwrap();
}

#[tokio::test]
async fn register_and_retro_subscribe_surface_not_found() {
    let node = Node::start(&[]);
    let mut c = Client::connect(node.addr()).await.unwrap();
    // The node started after this horizon: it cannot prove nothing is lost.
    let before_start = common::unix_now() - 3600;
    assert_eq!(
        c.retro_subscribe(before_start, ["old"]).await.unwrap(),
        Retro::ReloadEverything
    );
    let fresh = node.fresh_horizon();
    assert_eq!(
        c.retro_subscribe(fresh, ["new"]).await.unwrap(),
        Retro::Complete
    );

    // register, a publish, then the first subscribe replays it.
    let mut late = Client::connect(node.addr()).await.unwrap();
    late.register().await.unwrap();
    let mut publisher = Client::connect(node.addr()).await.unwrap();
    publisher.publish(["r"], "after register").await.unwrap();
    // The publish is routed asynchronously; give it time to be buffered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(late.subscribe(["r"]).await.unwrap(), Retro::Complete);
    assert_eq!(
        poll_n(&mut late, 1).await,
        vec![Message::new(["r"], "after register")]
    );
}

#[tokio::test]
async fn subscriber_yields_messages_and_follows_topic_changes() {
    let node = Node::start(&[]);
    let options = SubscriberOptions {
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let mut sub = Subscriber::connect(node.addr().to_string(), ["news"], options)
        .await
        .unwrap();
    let mut publisher = Client::connect(node.addr()).await.unwrap();
    publisher.publish(["news"], "first").await.unwrap();
    assert_eq!(next_event(&mut sub).await, message(&["news"], "first"));

    sub.subscribe(["sport"]).await.unwrap();
    sub.unsubscribe(["news"]).await.unwrap();
    publisher.publish(["news"], "unheard").await.unwrap();
    publisher
        .publish(["sport", "news"], "second")
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await, message(&["sport"], "second"));
    assert_eq!(sub.reconnects(), 0);
    let topics: Vec<_> = sub.topics().cloned().collect();
    assert_eq!(topics, vec![b("sport")]);
}

/// The node closes the subscriber's connection (idle timeout: it polls less
/// often than that); messages queued on the lost connection and messages
/// published while it was gone are replayed on reconnection.
#[tokio::test]
async fn subscriber_replays_what_a_lost_connection_missed() {
    let node = Node::start(&[("client_idle_timeout", "1")]);
    let options = SubscriberOptions {
        poll_interval: Duration::from_secs(3),
        ..Default::default()
    };
    // A horizon in the node's start second could not be proven complete.
    node.fresh_horizon();
    let mut sub = Subscriber::connect(node.addr().to_string(), ["t"], options)
        .await
        .unwrap();
    let addr = node.addr();
    let publishing = tokio::spawn(async move {
        let mut publisher = Client::connect(addr).await.unwrap();
        // Queued on the subscriber's connection, which is lost before its
        // next poll.
        publisher.publish(["t"], "queued").await.unwrap();
        // The node closes the silent subscriber after ~1 s; the publisher
        // polls to stay connected.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            publisher.poll().await.unwrap();
        }
        publisher.publish(["t"], "meanwhile").await.unwrap();
        publisher.poll().await.unwrap();
    });
    // At-least-once: "queued" may come twice (before and after the loss).
    let mut got = Vec::new();
    while !got.contains(&message(&["t"], "meanwhile")) {
        got.push(next_event(&mut sub).await);
    }
    publishing.await.unwrap();
    got.dedup();
    assert_eq!(
        got,
        vec![message(&["t"], "queued"), message(&["t"], "meanwhile")]
    );
    assert!(sub.reconnects() >= 1, "the connection was never lost");
    assert!(
        node.log_contains("idle"),
        "the node did not log closing an idle client"
    );
}

/// The node restarts on the same port: the subscriber reconnects, the new
/// node cannot replay what the old one had, so the subscriber says "reload
/// everything", then delivers what the new node receives.
#[tokio::test]
async fn subscriber_reloads_everything_after_a_node_restart() {
    let first = Node::start(&[]);
    let port = first.port().to_string();
    let options = SubscriberOptions {
        poll_interval: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let mut sub = Subscriber::connect(first.addr().to_string(), ["x"], options)
        .await
        .unwrap();
    let mut publisher = Client::connect(first.addr()).await.unwrap();
    publisher.publish(["x"], "before").await.unwrap();
    assert_eq!(next_event(&mut sub).await, message(&["x"], "before"));

    drop(publisher);
    drop(first);
    let second = Node::start_with(NodeOptions {
        options: &[("tcp_server_port", port.as_str())],
        no_port_arg: true,
        ..Default::default()
    });
    assert_eq!(next_event(&mut sub).await, Event::ReloadEverything);
    assert!(sub.reconnects() >= 1);

    let mut publisher = Client::connect(second.addr()).await.unwrap();
    publisher.publish(["x"], "after").await.unwrap();
    assert_eq!(next_event(&mut sub).await, message(&["x"], "after"));
}

/// A replay larger than the node's per-client queue limit gets every
/// reconnection closed as a slow consumer: the subscriber gives up on the
/// replay after a few attempts, says "reload everything", and goes on.
#[tokio::test]
async fn subscriber_gives_up_a_replay_that_cannot_fit_and_reloads() {
    let node = Node::start(&[("max_queue_messages", "5")]);
    node.fresh_horizon();
    let options = SubscriberOptions {
        poll_interval: Duration::from_millis(500),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let mut sub = Subscriber::connect(node.addr().to_string(), ["q"], options)
        .await
        .unwrap();
    // The first poll (at once) finds nothing; the flood overflows the queue
    // before the next.
    assert_eq!(
        timeout(Duration::from_millis(300), sub.next()).await.ok(),
        None
    );
    let mut publisher = Client::connect(node.addr()).await.unwrap();
    for i in 0..20 {
        publisher.publish(["q"], format!("m{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    while got.last() != Some(&Event::ReloadEverything) {
        got.push(next_event(&mut sub).await);
    }
    assert!(
        sub.reconnects() >= 3,
        "reconnects {} events {got:?}",
        sub.reconnects()
    );
    publisher.publish(["q"], "after").await.unwrap();
    assert_eq!(next_event(&mut sub).await, message(&["q"], "after"));
    assert!(node.log_contains("slow consumer"));
}
