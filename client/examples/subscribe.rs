//! Subscribes to topics on a Kraken node and prints what arrives; publishes
//! a greeting first so that something does.
//!
//! ```text
//! kraken run &                      # a node on 127.0.0.1:12355
//! cargo run -p kraken-client --example subscribe -- 127.0.0.1:12355 news sports
//! ```
//!
//! Optional `--count N` exits after N messages. Stop the node and start it
//! again while this runs: the subscriber reconnects and prints
//! `reload everything` (the new node cannot replay what the old one had).

use std::time::Duration;

use kraken_client::{Client, Event, Subscriber, SubscriberOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut count = None;
    if let Some(i) = args.iter().position(|a| a == "--count") {
        count = Some(
            args.get(i + 1)
                .ok_or("--count needs a number")?
                .parse::<u64>()?,
        );
        args.drain(i..i + 2);
    }
    let addr = args.first().cloned().unwrap_or("127.0.0.1:12355".into());
    let mut topics: Vec<String> = args.into_iter().skip(1).collect();
    if topics.is_empty() {
        topics.push("news".into());
    }

    let options = SubscriberOptions {
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let mut sub = Subscriber::connect(addr.as_str(), &topics, options).await?;
    println!("subscribed to {topics:?} on {addr}");

    // Another connection publishes (a publisher never receives its own
    // messages).
    let mut publisher = Client::connect(addr.as_str()).await?;
    publisher
        .publish([&topics[0]], "hello from the example")
        .await?;
    publisher.quit().await?;

    let mut seen = 0;
    loop {
        match sub.next().await {
            Event::Message { topics, payload } => {
                let topics: Vec<_> = topics.iter().map(|t| String::from_utf8_lossy(t)).collect();
                println!("{topics:?}: {}", String::from_utf8_lossy(&payload));
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            Event::ReloadEverything => println!("reload everything (messages may be lost)"),
        }
    }
    sub.close().await;
    Ok(())
}
