//! Request/reply: one server process answers several client processes calling at once. Each
//! call carries its own reply channel, so every reply reaches its caller; a server that is gone
//! is an error for the caller, not a hang.
//!
//! Run: `cargo run --example request_reply`
//!
//! Prints one line per client (`client N: 50 calls answered correctly`), then what a caller
//! gets when its request crashes the server, what the server's handle reports, and what a call
//! to the server that is gone returns.
// ANCHOR: protocol
use std::time::Duration;

use multiproc::{Client, Server};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Add(i64, i64),
    Reverse(String),
    /// A request the server cannot survive.
    Crash,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Reply {
    Sum(i64),
    Reversed(String),
}
// ANCHOR_END: protocol

// ANCHOR: server
#[multiproc::process]
fn server(server: Server<Request, Reply>) -> usize {
    server.serve(|request| match request {
        Request::Add(a, b) => Reply::Sum(a + b),
        Request::Reverse(s) => Reply::Reversed(s.chars().rev().collect()),
        Request::Crash => panic!("asked to crash"),
    })
}
// ANCHOR_END: server

// ANCHOR: client
#[multiproc::process]
fn client(id: i64, calls: Client<Request, Reply>) -> usize {
    let timeout = Duration::from_secs(10);
    let mut ok = 0;
    for i in 0..25 {
        let sum = calls.call(Request::Add(id, i), timeout).expect("add");
        assert_eq!(sum, Reply::Sum(id + i));
        let text = format!("{id}-{i}");
        let back = calls
            .call(Request::Reverse(text.clone()), timeout)
            .expect("reverse");
        assert_eq!(back, Reply::Reversed(text.chars().rev().collect()));
        ok += 2;
    }
    ok
}
// ANCHOR_END: client

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let (calls, answers) = multiproc::service::<Request, Reply>("calculator")?;
    let server = multiproc::spawn(server, (answers,))?;
    let clients: Vec<_> = (0..4)
        .map(|id| multiproc::spawn(client, (id, calls.clone())))
        .collect::<Result<_, _>>()?;
    for (id, c) in clients.into_iter().enumerate() {
        println!("client {id}: {} calls answered correctly", c.join()?);
    }

    // A request that kills the server: the caller hears of it at once.
    let err = calls
        .call(Request::Crash, Duration::from_secs(10))
        .unwrap_err();
    println!("the crashing call: {err}");
    assert!(err.is_disconnected());
    let died = server.join().unwrap_err();
    println!("the server: {}", died.remote_panic().expect("it panicked"));
    // And once it is gone, calls fail without waiting.
    let err = calls
        .call(Request::Add(1, 1), Duration::from_secs(10))
        .unwrap_err();
    println!("a call after that: {err}");
    assert!(err.is_disconnected());
    Ok(())
}
// ANCHOR_END: main
