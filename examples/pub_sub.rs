//! Publish/subscribe: one publisher process, every subscriber process gets every message, in
//! the order published. The publisher holds one sender per subscriber; a subscriber's loop ends
//! when the publisher finishes.
//!
//! Run: `cargo run --example pub_sub`
//!
//! Prints `published 10 prices to 3 subscribers`, then one line per subscriber with how many
//! prices it got and their sum (the same for all).
// ANCHOR: roles
use multiproc::{Process, Receiver, Sender};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Price {
    seq: u32,
    cents: u64,
}

/// Sends every price to every subscriber.
#[derive(Serialize, Deserialize)]
struct Publisher {
    subscribers: Vec<Sender<Price>>,
    count: u32,
}

#[multiproc::process]
impl Publisher {
    fn run(self) -> u32 {
        for seq in 0..self.count {
            let price = Price {
                seq,
                cents: 1000 + u64::from(seq) * 25,
            };
            for s in &self.subscribers {
                s.send(price.clone()).expect("subscriber");
            }
        }
        self.count
    }
}

/// Receives every price, checks the order, and sums them.
#[derive(Serialize, Deserialize)]
struct Subscriber {
    feed: Receiver<Price>,
}

#[multiproc::process]
impl Subscriber {
    fn run(self) -> (u32, u64) {
        let mut expected = 0;
        let mut sum = 0;
        for price in self.feed {
            assert_eq!(price.seq, expected, "out of order");
            expected += 1;
            sum += price.cents;
        }
        (expected, sum)
    }
}
// ANCHOR_END: roles

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let mut feeds = Vec::new();
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = multiproc::channel()?;
        feeds.push(tx);
        subscribers.push(Subscriber { feed: rx }.spawn()?);
    }
    let publisher = Publisher {
        subscribers: feeds,
        count: 10,
    }
    .spawn()?;
    let published = publisher.join()?;
    println!(
        "published {published} prices to {} subscribers",
        subscribers.len()
    );
    let mut totals = Vec::new();
    for (id, s) in subscribers.into_iter().enumerate() {
        let (n, sum) = s.join()?;
        println!("subscriber {id}: {n} prices, sum {sum}");
        totals.push((n, sum));
    }
    assert!(totals.iter().all(|t| *t == (published, totals[0].1)));
    Ok(())
}
// ANCHOR_END: main
