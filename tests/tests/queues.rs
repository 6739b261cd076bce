//! Backpressure, MPMC queues, select and descriptor bounds, across processes.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::{Bytes, ErrorKind, JoinableQueue, Queue, Receiver, Select, Sender, TrySendError};
use support::{DEADLINE, Odd, join, within};

#[multiproc::process]
fn try_one(tx: Sender<String>, value: String) -> String {
    match tx.try_send(value) {
        Ok(()) => "sent".to_string(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

// ANCHOR: bounded
#[multiproc::test]
fn bounded_send_reports_full_and_returns_the_message() {
    let (tx, rx) = multiproc::bounded::<String>(2).unwrap();
    tx.send("a".into()).unwrap();
    tx.try_send("b".into()).unwrap();
    let full: TrySendError<String> = tx.try_send("c".into()).unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Full);
    assert!(
        full.to_string().contains("full (2 messages in flight)"),
        "{full}"
    );
    assert_eq!(full.into_inner(), "c");
    let late = tx
        .send_timeout("d".into(), Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(late.kind(), ErrorKind::Timeout);
    assert_eq!(late.into_inner(), "d");

    // The limit is shared with a clone in another process.
    let child = multiproc::spawn(try_one, (tx.clone(), "x".to_string())).unwrap();
    assert_eq!(join(child).unwrap(), "Full");

    // Receiving makes room again, for exactly one message.
    assert_eq!(rx.recv().unwrap(), "a");
    tx.try_send("e".into()).unwrap();
    assert!(tx.try_send("f".into()).unwrap_err().is_full());
    assert_eq!(rx.recv().unwrap(), "b");
    assert_eq!(rx.recv().unwrap(), "e");
}
// ANCHOR_END: bounded

#[multiproc::process]
fn slow_sink(rx: Receiver<u32>, go: Receiver<()>) -> Vec<u32> {
    go.recv().unwrap();
    rx.iter().collect()
}

#[multiproc::test]
fn bounded_send_blocks_until_the_reader_takes_one() {
    let (tx, rx) = multiproc::bounded::<u32>(3).unwrap();
    let (go_tx, go_rx) = multiproc::channel::<()>().unwrap();
    let child = multiproc::spawn(slow_sink, (rx, go_rx)).unwrap();
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    // The reader has not read anything: a fourth message finds no room.
    assert!(tx.try_send(3).unwrap_err().is_full());
    go_tx.send(()).unwrap();
    // Now `send` blocks only until the child drains the channel.
    for i in 3..100 {
        tx.send_timeout(i, DEADLINE).unwrap();
    }
    drop(tx);
    assert_eq!(join(child).unwrap(), (0..100).collect::<Vec<_>>());
}

#[multiproc::test]
fn bounded_sender_sees_a_dead_receiver_while_waiting_for_room() {
    let (tx, rx) = multiproc::bounded::<u32>(1).unwrap();
    tx.send(1).unwrap();
    let waiting = std::thread::spawn(move || tx.send_timeout(2, DEADLINE).map_err(|e| e.kind()));
    drop(rx);
    let kind = waiting.join().unwrap().unwrap_err();
    assert_eq!(kind, ErrorKind::Disconnected);
}

#[test]
fn zero_capacity_is_an_error_that_names_the_fix() {
    let e = multiproc::bounded::<u8>(0).unwrap_err();
    assert!(e.to_string().contains("use `channel()`"), "{e}");
    let e = Queue::<u8>::with_maxsize(0).unwrap_err();
    assert!(e.to_string().contains("Queue::new()"), "{e}");
}

#[test]
fn unbounded_send_never_blocks_on_a_reader_in_the_same_thread() {
    // Far beyond the kernel's buffer (a few hundred small messages, ~200 KiB).
    let got = within(|| {
        let (tx, rx) = multiproc::channel::<u64>().unwrap();
        for i in 0..20_000 {
            tx.send(i).unwrap();
        }
        // Messages larger than the socket buffer do not block either.
        let (big_tx, big_rx) = multiproc::channel::<Bytes>().unwrap();
        for _ in 0..4 {
            big_tx.send(Bytes::from(vec![7_u8; 1 << 20])).unwrap();
        }
        drop(tx);
        let small: Vec<u64> = rx.iter().collect();
        let big: Vec<usize> = (0..4).map(|_| big_rx.recv().unwrap().len()).collect();
        (small, big)
    });
    assert_eq!(got.0, (0..20_000).collect::<Vec<_>>());
    assert_eq!(got.1, [1 << 20; 4]);
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Item {
    Small(u32),
    Big(Bytes),
    Reply(Sender<u32>),
}

#[multiproc::process]
fn sum_items(rx: Receiver<Item>) -> (u64, usize, usize) {
    let (mut sum, mut big, mut replies) = (0, 0, 0);
    let mut next = 0;
    for item in rx {
        match item {
            Item::Small(n) => {
                assert_eq!(n, next, "out of order");
                next += 1;
                sum += u64::from(n);
            }
            Item::Big(b) => big += b.len(),
            Item::Reply(tx) => {
                tx.send(replies as u32).unwrap();
                replies += 1;
            }
        }
    }
    (sum, big, replies)
}

#[multiproc::test]
fn send_many_keeps_order_across_batches_big_items_and_channel_ends() {
    let (tx, rx) = multiproc::channel::<Item>().unwrap();
    let child = multiproc::spawn(sum_items, (rx,)).unwrap();
    let (reply_tx, reply_rx) = multiproc::channel::<u32>().unwrap();
    let mut items = Vec::new();
    for i in 0..30_000_u32 {
        items.push(Item::Small(i));
        if i % 10_000 == 0 {
            items.push(Item::Big(Bytes::from(vec![1; 100_000])));
            items.push(Item::Reply(reply_tx.clone()));
        }
    }
    tx.send_many(items).unwrap();
    drop(tx);
    let (sum, big, replies) = join(child).unwrap();
    assert_eq!(sum, (0..30_000_u64).sum::<u64>());
    assert_eq!((big, replies), (300_000, 3));
    drop(reply_tx);
    assert_eq!(reply_rx.iter().collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn send_many_on_a_bounded_channel_respects_the_bound() {
    let (tx, rx) = multiproc::bounded::<u8>(2).unwrap();
    tx.send_many([1, 2]).unwrap();
    assert!(tx.try_send(3).unwrap_err().is_full());
    assert_eq!(rx.try_recv().unwrap(), 1);
}

// ANCHOR: queue
#[multiproc::process]
fn consumer(queue: Queue<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match queue.get() {
            Ok(item) => got.push(item),
            Err(e) if e.kind() == ErrorKind::Closed => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[multiproc::test]
fn a_queue_delivers_each_item_to_exactly_one_of_many_consumers() {
    let queue = Queue::<u32>::with_maxsize(16).unwrap();
    let consumers: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(consumer, (queue.clone(),)).unwrap())
        .collect();
    for i in 0..2_000 {
        queue.put_timeout(i, DEADLINE).unwrap();
    }
    queue.close().unwrap();
    let mut all = Vec::new();
    for c in consumers {
        all.extend(join(c).unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..2_000).collect::<Vec<_>>(),
        "lost or duplicated items"
    );
    assert_eq!(queue.put(1).unwrap_err().kind(), ErrorKind::Closed);
}
// ANCHOR_END: queue

#[multiproc::process]
fn grab_one_then_hold(queue: Queue<u32>, told: Sender<u32>, hold: Receiver<()>) {
    told.send(queue.get().unwrap()).unwrap();
    // Holds its queue handle, and whatever it may have read ahead, until killed.
    let _ = hold.recv();
}

#[multiproc::test]
fn a_killed_consumer_leaves_the_queue_usable_for_the_others() {
    let queue = Queue::<u32>::new().unwrap();
    for i in 0..=50 {
        queue.put(i).unwrap();
    }
    let (told_tx, told_rx) = multiproc::channel::<u32>().unwrap();
    let (_hold_tx, hold_rx) = multiproc::channel::<()>().unwrap();
    let mut victim =
        multiproc::spawn(grab_one_then_hold, (queue.clone(), told_tx, hold_rx)).unwrap();
    let taken = told_rx.recv_timeout(DEADLINE).unwrap();
    victim.kill().unwrap();
    let e = join(victim).unwrap_err();
    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");

    // Everything but the one item it got is still there: a consumer that read ahead (into
    // a buffer of its process) would have taken more with it.
    let survivor = multiproc::spawn(consumer, (queue.clone(),)).unwrap();
    queue.put(51).unwrap();
    queue.close().unwrap();
    let expected: Vec<u32> = (0..=51).filter(|&i| i != taken).collect();
    assert_eq!(join(survivor).unwrap(), expected);
}

#[test]
fn an_undecodable_item_is_an_error_and_the_queue_stays_usable() {
    let queue = Queue::<Odd>::new().unwrap();
    queue.put(Odd(2)).unwrap();
    queue.put(Odd(3)).unwrap();
    let e = queue.get().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deserialize);
    assert!(e.to_string().contains("Odd"), "{e}");
    assert_eq!(queue.get().unwrap(), Odd(3));
}

#[multiproc::process]
fn worker(queue: JoinableQueue<u64>, results: Sender<u64>) {
    while let Ok(n) = queue.get() {
        results.send(n * n).unwrap();
        queue.task_done().unwrap();
    }
}

#[multiproc::test]
fn join_waits_for_every_task_done_in_other_processes() {
    let queue = JoinableQueue::<u64>::new().unwrap();
    let (tx, rx) = multiproc::channel::<u64>().unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(worker, (queue.clone(), tx.clone())).unwrap())
        .collect();
    drop(tx);
    for n in 1..=100 {
        queue.put(n).unwrap();
    }
    queue.join_timeout(DEADLINE).unwrap();
    assert_eq!(queue.unfinished_tasks(), 0);
    // Every result was sent before its task_done.
    let mut got = BTreeSet::new();
    for _ in 0..100 {
        got.insert(rx.try_recv().unwrap());
    }
    assert_eq!(got, (1..=100).map(|n| n * n).collect());
    queue.close().unwrap();
    for w in workers {
        join(w).unwrap();
    }
    let e = queue.task_done().unwrap_err();
    assert!(
        e.to_string().contains("more times than items were put"),
        "{e}"
    );
    assert_eq!(queue.unfinished_tasks(), 0);
}

// ANCHOR: select
#[multiproc::process]
fn answer_after(go: Receiver<()>, out: Sender<String>) -> u8 {
    go.recv().unwrap();
    out.send("late".to_string()).unwrap();
    7
}

#[multiproc::test]
fn select_waits_on_receivers_queues_and_child_exits() {
    let (tx_a, rx_a) = multiproc::channel::<u32>().unwrap();
    let queue = Queue::<u32>::new().unwrap();
    let (go_tx, go_rx) = multiproc::channel::<()>().unwrap();
    let (out_tx, out_rx) = multiproc::channel::<String>().unwrap();
    let mut child = multiproc::spawn(answer_after, (go_rx, out_tx)).unwrap();

    {
        let mut select = Select::new();
        let a = select.add(&rx_a);
        let q = select.add(&queue);
        let out = select.add(&out_rx);
        let c = select.add(&child);
        assert!(
            select
                .ready_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
        queue.put(5).unwrap();
        assert_eq!(select.ready_timeout(DEADLINE).unwrap(), q);
        assert_eq!(queue.try_get().unwrap(), 5);
        tx_a.send(1).unwrap();
        assert_eq!(select.ready_timeout(DEADLINE).unwrap(), a);
        assert_eq!(rx_a.try_recv().unwrap(), 1);
        go_tx.send(()).unwrap();
        let first = select.ready_timeout(DEADLINE).unwrap();
        assert!(first == out || first == c);
        assert_eq!(out_rx.recv_timeout(DEADLINE).unwrap(), "late");
        // The child's result arrives: its handle is ready.
        let mut only_child = Select::new();
        only_child.add(&child);
        only_child.ready_timeout(DEADLINE).unwrap();
    }
    assert_eq!(child.join_timeout(Duration::ZERO).unwrap(), Some(7));
}
// ANCHOR_END: select

#[test]
fn a_receiver_handed_back_by_a_failed_send_keeps_draining() {
    let got = within(|| {
        let (full_tx, _full_rx) = multiproc::bounded::<Receiver<u64>>(1).unwrap();
        let (spare_tx, spare_rx) = multiproc::channel::<u64>().unwrap();
        full_tx.send(spare_rx).unwrap();
        let (tx, rx) = multiproc::channel::<u64>().unwrap();
        let rx = full_tx.try_send(rx).unwrap_err().into_inner();
        // Far more than the kernel buffer holds, from the same thread: only the pump can
        // make room, so the handed-back receiver must still be pumped.
        for i in 0..20_000 {
            tx.send(i).unwrap();
        }
        drop((tx, spare_tx));
        rx.iter().count()
    });
    assert_eq!(got, 20_000);
}

/// Iterates a queue until it is closed and empty: how many items it got, and their sum.
#[multiproc::process]
fn iterate(queue: multiproc::Queue<u64>) -> (usize, u64) {
    let mut seen = (0, 0);
    for item in &queue {
        seen = (seen.0 + 1, seen.1 + item);
    }
    seen
}

/// Issue 13, item 2 (what Python users reach for): consumers in two processes iterate one
/// queue; every item reaches one of them, and both loops end at `close()`.
#[multiproc::test]
fn issue13_2_consumers_iterate_a_queue_until_it_closes() {
    let queue = multiproc::Queue::<u64>::new().unwrap();
    let a = multiproc::spawn(iterate, (queue.clone(),)).unwrap();
    let b = multiproc::spawn(iterate, (queue.clone(),)).unwrap();
    for i in 1..=100 {
        queue.put(i).unwrap();
    }
    queue.close().unwrap();
    let (a, b) = (support::join(a).unwrap(), support::join(b).unwrap());
    assert_eq!(a.0 + b.0, 100);
    assert_eq!(a.1 + b.1, 5050);
}

/// Iterates a queue of strings until it is closed: how many, and the sum of their numbers.
#[multiproc::process]
fn count_strings(queue: Queue<String>) -> (usize, u64) {
    let mut seen = (0, 0);
    for item in &queue {
        let n: u64 = item.trim_start_matches("item ").parse().unwrap();
        seen = (seen.0 + 1, seen.1 + n);
    }
    seen
}

/// Issue 13, item 2: "put everything, then start the workers". An unbounded queue takes
/// 100,000 items with no consumer yet (before the fix, the 278th small put blocked for good).
#[multiproc::test]
fn issue13_2_an_unbounded_queue_takes_100k_puts_before_any_consumer_starts() {
    let queue = Queue::<String>::new().unwrap();
    let filler = queue.clone();
    within(move || {
        for i in 0..100_000u64 {
            filler.try_put(format!("item {i}")).unwrap();
        }
    });
    assert_eq!(queue.len(), 100_000);
    assert!(!queue.is_full());
    let a = multiproc::spawn(count_strings, (queue.clone(),)).unwrap();
    let b = multiproc::spawn(count_strings, (queue.clone(),)).unwrap();
    queue.close().unwrap();
    let (a, b) = (join(a).unwrap(), join(b).unwrap());
    assert_eq!(a.0 + b.0, 100_000);
    assert_eq!(a.1 + b.1, 100_000 * 99_999 / 2);
    assert!(queue.is_empty());
}

/// Fills a queue from another process until it reports full: how many it took.
#[multiproc::process]
fn fill(queue: Queue<u32>) -> usize {
    let mut n = 0;
    loop {
        match queue.try_put(n as u32) {
            Ok(()) => n += 1,
            Err(e) if e.is_full() => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Issue 13, item 2: `with_maxsize(n)` holds exactly n items for any n (before the fix, the
/// kernel's socket buffer capped every queue near 278 small items).
#[multiproc::test]
fn issue13_2_a_bounded_queue_holds_exactly_maxsize_items_for_any_maxsize() {
    for n in [1, 300, 5_000] {
        let queue = Queue::<u32>::with_maxsize(n).unwrap();
        assert_eq!(
            join(multiproc::spawn(fill, (queue.clone(),)).unwrap()).unwrap(),
            n
        );
        assert!(queue.is_full());
        assert_eq!(queue.len(), n);
        let full = queue.try_put(7).unwrap_err();
        assert!(
            full.to_string().contains(&format!("full ({n} items)")),
            "{full}"
        );
        assert_eq!(queue.get().unwrap(), 0);
        queue.try_put(7).unwrap();
        assert!(queue.try_put(8).unwrap_err().is_full());
    }
}

#[multiproc::process]
fn put_and_exit(queue: Queue<u32>, n: u32) {
    for i in 0..n {
        queue.put(i).unwrap();
    }
}

/// Issue 13, item 2: an item whose `put` returned is in the queue once its producer has
/// exited, and joining the producer before draining the queue (Python's deadlock, whose
/// feeder thread must flush before the process may end) returns at once.
#[multiproc::test]
fn issue13_2_items_outlive_their_producer_and_joining_it_before_draining_returns() {
    let queue = Queue::<u32>::new().unwrap();
    let producer = multiproc::spawn(put_and_exit, (queue.clone(), 20_000)).unwrap();
    join(producer).unwrap();
    assert_eq!(queue.len(), 20_000);
    queue.close().unwrap();
    let items: Vec<u32> = queue.iter().collect();
    assert_eq!(items, (0..20_000).collect::<Vec<_>>());
}

#[multiproc::process]
fn answer_each(queue: Queue<(u32, Sender<u32>)>) -> usize {
    let mut n = 0;
    for (i, reply) in &queue {
        reply.send(i * 2).unwrap();
        n += 1;
    }
    n
}

/// Issue 13, item 2: items that carry descriptors (here a channel end each) still reach
/// their consumer whole, in order, after the redesign moved the items out of the socket.
#[multiproc::test]
fn issue13_2_queue_items_that_carry_channel_ends_reach_a_consumer_whole() {
    let queue = Queue::<(u32, Sender<u32>)>::new().unwrap();
    let (tx, rx) = multiproc::channel::<u32>().unwrap();
    for i in 0..200 {
        queue.put((i, tx.clone())).unwrap();
    }
    let child = multiproc::spawn(answer_each, (queue.clone(),)).unwrap();
    queue.close().unwrap();
    assert_eq!(join(child).unwrap(), 200);
    let answers: Vec<u32> = (0..200)
        .map(|_| rx.recv_timeout(DEADLINE).unwrap())
        .collect();
    assert_eq!(answers, (0..200).map(|i| i * 2).collect::<Vec<_>>());
}

#[multiproc::process]
fn produce_forever(queue: Queue<(u64, String)>, done: Sender<u64>, base: u64) {
    // Large items keep the lock held long enough that some kills land while it is.
    let filler = "x".repeat(64 << 10);
    for i in base.. {
        queue.put((i, filler.clone())).unwrap();
        done.send(i).unwrap();
    }
}

#[multiproc::process]
fn consume_forever(queue: Queue<(u64, String)>, got: Sender<u64>) {
    loop {
        got.send(queue.get().unwrap().0).unwrap();
    }
}

/// Issue 13, items 2 and 9 (fault injection): a producer and a consumer of a bounded queue
/// are SIGKILLed at random points of their puts and gets, round after round. Afterwards no
/// item is duplicated, every item whose put returned was taken or is still there (a killed
/// consumer may lose the one it had taken, no more), and the queue holds exactly its maxsize
/// again. Before the fix, 60 such kills lost 13 to 16 places for good, and a `with_maxsize(4)`
/// queue ended with none.
#[multiproc::test]
fn issue13_2_random_kills_during_bounded_put_and_get_never_cost_a_place() {
    const MAXSIZE: usize = 4;
    const ROUNDS: u64 = 60;
    let mut next = support::random();
    let queue = Queue::<(u64, String)>::with_maxsize(MAXSIZE).unwrap();
    let (put_tx, put_rx) = multiproc::channel::<u64>().unwrap();
    let (got_tx, got_rx) = multiproc::channel::<u64>().unwrap();
    let mut got = Vec::new();
    for round in 0..ROUNDS {
        let mut producer = multiproc::spawn(
            produce_forever,
            (queue.clone(), put_tx.clone(), round << 32),
        )
        .unwrap();
        let mut consumer =
            multiproc::spawn(consume_forever, (queue.clone(), got_tx.clone())).unwrap();
        // Strikes after a random number of items went through: one of the two first, the
        // other after a few more of its own steps.
        for _ in 0..1 + next() % 40 {
            got.push(got_rx.recv_timeout(DEADLINE).unwrap());
        }
        let (first, second) = if next().is_multiple_of(2) {
            (&mut producer, &mut consumer)
        } else {
            (&mut consumer, &mut producer)
        };
        first.kill().unwrap();
        for _ in 0..next() % 200 {
            std::hint::spin_loop();
        }
        second.kill().unwrap();
        for handle in [producer, consumer] {
            let e = join(handle).unwrap_err();
            assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
        }
    }
    drop((put_tx, got_tx));
    let put: Vec<u64> = put_rx.iter().collect();
    got.extend(got_rx.iter());
    while let Ok((item, _)) = queue.try_get() {
        got.push(item);
    }
    let taken: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(taken.len(), got.len(), "an item was delivered twice");
    let lost = put.iter().filter(|i| !taken.contains(i)).count();
    assert!(
        lost as u64 <= ROUNDS,
        "{lost} items lost to {ROUNDS} consumer kills (at most one each)"
    );
    // Every place is back.
    assert!(queue.is_empty());
    for i in 0..MAXSIZE as u64 {
        queue.try_put((i, String::new())).unwrap();
    }
    assert!(queue.try_put((99, String::new())).unwrap_err().is_full());
}
