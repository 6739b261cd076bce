//! Producer/consumer over a typed channel: the multiprocessing queue example, done right.
//! The consumer is its own process; the parent produces. Dropping the last sender ends the
//! consumer's loop: no sentinel value, no deadlock on join.
//!
//! Run: `cargo run --example producer_consumer`
//!
//! Prints the three messages (from the consumer), then `consumer printed 3 messages`.

// ANCHOR: printer
use multiproc::Process;
use serde::{Deserialize, Serialize};

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
    let (tx, rx) = multiproc::channel::<String>()?;
    let p = Printer { inbox: rx }.spawn()?;
    for k in ["aa", "bb", "cc"] {
        tx.send(k.to_string())?;
    }
    drop(tx); // the consumer's loop ends: no deadlock
    let printed = p.join()?;
    println!("consumer printed {printed} messages");
    assert_eq!(printed, 3);
    Ok(())
}
// ANCHOR_END: main
