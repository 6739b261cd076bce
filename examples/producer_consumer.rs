//! Producer/consumer over a typed channel: the multiprocessing queue example, done right.
//! The consumer is its own process; the parent produces. Dropping the last sender ends the
//! consumer's loop: no sentinel value, no deadlock on join.
//!
//! Run: `cargo run --example producer_consumer`
//!
//! Prints the three messages (from the consumer), then `consumer printed 3 messages`.
use multiproc::{JoinHandle, Process};
use serde::{Deserialize, Serialize};
use std::time::Duration;

// ANCHOR: clock
#[multiproc::process]
fn clock(times: u32, interval: Duration) -> u32 {
    for _ in 0..times {
        std::thread::sleep(interval);
    }
    times
}

#[derive(Serialize, Deserialize)]
struct ClockProcess {
    times: u32,
    interval: Duration,
}

#[multiproc::process]
impl ClockProcess {
    fn run(self) -> u32 {
        for _ in 0..self.times {
            std::thread::sleep(self.interval);
        }
        self.times
    }
}
// ANCHOR_END: clock

// ANCHOR: printer
#[derive(Serialize, Deserialize)]
struct Printer {
    inbox: multiproc::Receiver<String>,
}

#[multiproc::process]
impl Printer {
    fn run(self) -> usize {
        self.inbox.into_iter().map(|m| println!("{m}")).count()
    }
}
// ANCHOR_END: printer

// ANCHOR: main
#[multiproc::main]
fn main() -> Result<(), multiproc::Error> {
    let a: JoinHandle<u32> = multiproc::spawn(clock, (5, Duration::from_millis(100)))?;
    let b: JoinHandle<u32> = ClockProcess {
        times: 5,
        interval: Duration::from_millis(100),
    }
    .spawn()?;
    let (tx, rx) = multiproc::channel::<String>()?;
    let p = Printer { inbox: rx }.spawn()?;
    for k in ["aa", "bb", "cc"] {
        tx.send(k.to_string())?;
    }
    drop(tx); // the consumer's loop ends: no deadlock
    let printed = p.join()?;
    println!("consumer printed {printed} messages");
    assert_eq!(printed, 3);
    assert_eq!(a.join()? + b.join()?, 10);
    Ok(())
}
// ANCHOR_END: main
