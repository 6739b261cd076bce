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

/// Bytes that say which message they are at every offset, so that one written over another
/// (a sender reusing memory that a receiver still reads) shows.
fn numbered(index: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (index as u8) ^ (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Checks every message it gets against [`numbered`] and reports its index.
#[multiproc::process]
fn check_numbered(inbox: multiproc::Receiver<(u64, Bytes)>, seen: multiproc::Sender<u64>) -> u64 {
    let mut count = 0;
    for (index, bytes) in inbox {
        assert!(
            bytes == numbered(index, bytes.len()),
            "message {index} arrived changed"
        );
        seen.send(index).unwrap();
        count += 1;
    }
    count
}

/// Issue 15 (large messages reuse their sender's memory): receivers SIGKILLed at random
/// points while large messages are on their way to them, or while they decode one, cost only
/// their own messages: every later message, to other receivers, arrives intact, however many
/// are on their way at once.
#[multiproc::test]
fn a_receiver_killed_holding_large_messages_spoils_no_later_message() {
    let mut next = support::random();
    let sizes = [100 << 10, 1 << 20, 3 << 20];
    let mut index = 0;
    let mut send = |tx: &multiproc::Sender<(u64, Bytes)>, next: &mut dyn FnMut() -> u64| {
        index += 1;
        let len = sizes[(next() % 3) as usize];
        tx.send((index, numbered(index, len))).unwrap();
    };
    for _ in 0..6 {
        let (tx, rx) = multiproc::channel().unwrap();
        let (seen_tx, seen_rx) = multiproc::channel().unwrap();
        let mut victim = multiproc::spawn(check_numbered, (rx, seen_tx)).unwrap();
        let sent = 2 + next() % 8;
        for _ in 0..sent {
            send(&tx, &mut next);
        }
        // Killed after it has checked some of them: while it maps, decodes or waits.
        for _ in 0..next() % sent {
            seen_rx.recv_timeout(DEADLINE).unwrap();
        }
        for _ in 0..next() % 50_000 {
            std::hint::spin_loop();
        }
        victim.kill().unwrap();
        let e = join(victim).unwrap_err();
        assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");

        // A new receiver gets many, some of them all on their way at once.
        let (tx, rx) = multiproc::channel().unwrap();
        let (seen_tx, seen_rx) = multiproc::channel().unwrap();
        let checker = multiproc::spawn(check_numbered, (rx, seen_tx)).unwrap();
        for burst in 0..8 {
            for _ in 0..burst % 4 + 1 {
                send(&tx, &mut next);
            }
            seen_rx.recv_timeout(DEADLINE).unwrap();
        }
        drop(tx);
        assert_eq!(join(checker).unwrap(), 20);
    }
}
