//! A ring: a token passes round N processes K times. Node `i` receives from node `i - 1` and
//! sends to node `i + 1`; node 0 counts the rounds and, after the last, stops the ring by
//! dropping its sender, which ends each node in turn.
//!
//! Run: `cargo run --example ring`
//!
//! Prints `5 nodes, 3 rounds`, the token's final hop count (15), then each node's count of
//! visits (3 each).
// ANCHOR: node
use multiproc::{Process, Receiver, Sender};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    hops: u32,
}

#[derive(Serialize, Deserialize)]
struct Node {
    id: usize,
    rounds: u32,
    inbox: Receiver<Token>,
    next: Sender<Token>,
    done: Sender<Token>,
}

#[multiproc::process]
impl Node {
    fn run(self) -> u32 {
        let mut visits = 0;
        let mut next = Some(self.next);
        for mut token in self.inbox {
            visits += 1;
            token.hops += 1;
            if self.id == 0 && visits == self.rounds {
                // Last round: report, and close the ring behind the token.
                self.done.send(token).expect("report");
                next = None;
                continue;
            }
            if let Some(next) = &next {
                next.send(token).expect("pass the token");
            }
        }
        visits
    }
}
// ANCHOR_END: node

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    const NODES: usize = 5;
    const ROUNDS: u32 = 3;
    println!("{NODES} nodes, {ROUNDS} rounds");
    let (links_tx, links_rx): (Vec<_>, Vec<_>) = (0..NODES)
        .map(|_| multiproc::channel::<Token>())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let (done_tx, done) = multiproc::channel()?;
    // Start at node 1, so that node 0 sees the token once per completed round.
    let start = links_tx[1 % NODES].clone();
    let mut handles = Vec::new();
    for (id, inbox) in links_rx.into_iter().enumerate() {
        let next = links_tx[(id + 1) % NODES].clone();
        let node = Node {
            id,
            rounds: ROUNDS,
            inbox,
            next,
            done: done_tx.clone(),
        };
        handles.push(node.spawn()?);
    }
    drop((links_tx, done_tx));

    start.send(Token { hops: 0 })?;
    drop(start);
    let token = done.recv()?;
    println!("token came back after {} hops", token.hops);
    assert_eq!(token.hops, NODES as u32 * ROUNDS);
    for (id, h) in handles.into_iter().enumerate() {
        let visits = h.join()?;
        println!("node {id} saw the token {visits} times");
        assert_eq!(visits, ROUNDS);
    }
    Ok(())
}
// ANCHOR_END: main
