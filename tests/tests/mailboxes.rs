//! Pipes, request/reply services and large payloads across processes.

mod support;

use std::time::Duration;

use multiproc::{Bytes, Client, ErrorKind, PipeEnd, Server, SharedMemory};
use support::{DEADLINE, Odd, join};

// ANCHOR: pipe
#[multiproc::process]
fn shouter(end: PipeEnd<String, String>) -> usize {
    let mut n = 0;
    while let Ok(word) = end.recv() {
        end.send(word.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

#[multiproc::test]
fn a_pipe_carries_one_type_each_way() {
    let (mine, theirs) = multiproc::pipe::<String, String>().unwrap();
    let child = multiproc::spawn(shouter, (theirs,)).unwrap();
    for w in ["a", "bc"] {
        mine.send(w.to_string()).unwrap();
        assert_eq!(mine.recv_timeout(DEADLINE).unwrap(), w.to_uppercase());
    }
    drop(mine);
    assert_eq!(join(child).unwrap(), 2);
}
// ANCHOR_END: pipe

#[multiproc::process]
fn doubler(server: Server<u64, u64>) -> usize {
    server.serve(|n| n * 2)
}

#[multiproc::process]
fn caller(id: u64, client: Client<u64, u64>) -> u64 {
    (0..50)
        .map(|i| {
            let n = id * 1000 + i;
            let got = client.call(n, DEADLINE).unwrap();
            assert_eq!(got, n * 2, "a reply reached the wrong caller");
            got
        })
        .sum()
}

#[multiproc::test]
fn replies_reach_their_callers_with_many_concurrent_callers() {
    let (client, server) = multiproc::service::<u64, u64>("doubler").unwrap();
    let server = multiproc::spawn(doubler, (server,)).unwrap();
    let callers: Vec<_> = (1..=4)
        .map(|id| multiproc::spawn(caller, (id, client.clone())).unwrap())
        .collect();
    // This process calls too, from two threads, while the children do.
    let threads: Vec<_> = (5..=6)
        .map(|id| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    assert_eq!(
                        client.call(id * 1000 + i, DEADLINE).unwrap(),
                        (id * 1000 + i) * 2
                    );
                }
            })
        })
        .collect();
    for c in callers {
        join(c).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    drop(client);
    assert_eq!(join(server).unwrap(), 300);
}

#[multiproc::process]
fn dies_on_first_request(server: Server<u64, u64>) {
    let request = server.recv().unwrap();
    let _ = request.get();
    std::process::exit(9);
}

#[multiproc::test]
fn a_server_that_dies_holding_a_call_fails_the_call_naming_it() {
    let (client, server) = multiproc::service::<u64, u64>("fragile").unwrap();
    let handle = multiproc::spawn(dies_on_first_request, (server,)).unwrap();
    let err = client.call(1, DEADLINE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected);
    assert!(err.to_string().contains("service `fragile`"), "{err}");
    assert_eq!(join(handle).unwrap_err().exit_code(), Some(9));
    // Later calls fail at once: nobody holds the server end any more.
    let err = client.call(2, DEADLINE).unwrap_err();
    assert!(err.to_string().contains("the server is gone"), "{err}");
}

#[multiproc::test]
fn a_slow_server_gives_the_caller_a_timeout() {
    let (client, server) = multiproc::service::<u64, u64>("slow").unwrap();
    // Nobody serves: the request waits in the channel.
    let err = client.call(1, Duration::from_millis(20)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("service `slow`"), "{err}");
    drop(server);
}

// ANCHOR: payloads
#[multiproc::process]
fn checksum(data: Bytes) -> (usize, u64) {
    (data.len(), data.iter().map(|&b| u64::from(b)).sum())
}

#[multiproc::process]
fn checksum_shared(data: SharedMemory) -> (usize, u64) {
    (data.len(), data.iter().map(|&b| u64::from(b)).sum())
}

#[multiproc::test]
fn large_payloads_cross_as_bytes_and_shared_memory() {
    let data: Vec<u8> = (0..(4 << 20)).map(|i| (i % 251) as u8).collect();
    let expected = (data.len(), data.iter().map(|&b| u64::from(b)).sum::<u64>());
    let shared = SharedMemory::from_bytes(&data).unwrap();
    let a = multiproc::spawn(checksum, (Bytes::from(data),)).unwrap();
    let b = multiproc::spawn(checksum_shared, (shared,)).unwrap();
    assert_eq!(join(a).unwrap(), expected);
    assert_eq!(join(b).unwrap(), expected);
}
// ANCHOR_END: payloads

#[test]
fn a_message_that_fails_to_decode_is_an_error_and_the_channel_stays_usable() {
    let (tx, rx) = multiproc::channel::<Odd>().unwrap();
    tx.send(Odd(2)).unwrap();
    tx.send(Odd(3)).unwrap();
    let err = rx.recv().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deserialize);
    assert!(err.to_string().contains("Odd"), "{err}");
    assert_eq!(rx.recv().unwrap(), Odd(3));
}
