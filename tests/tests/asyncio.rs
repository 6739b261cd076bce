//! Async waits on one single-threaded runtime: receivers, queues, child handles and pool
//! results resolve without blocking it, under a deadline; a dropped wait leaves the channel
//! as it was.

mod support;

use std::time::Duration;

use multiproc::{Pool, Queue, Receiver, Sender};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Runs `f` on a fresh single-threaded runtime, failing the test after the deadline.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(support::DEADLINE, f)
            .await
            .expect("the async test ran past its deadline")
    })
}

#[multiproc::process]
fn echo_twice(input: Receiver<u32>, output: Sender<u32>) -> u32 {
    let mut n = 0;
    for x in input {
        output.send(x).unwrap();
        output.send(x).unwrap();
        n += 1;
    }
    n
}

#[multiproc::process]
fn take_from(queue: Queue<u32>) -> u32 {
    queue.get().unwrap() * 10
}

#[multiproc::process]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::test]
fn a_child_answers_async_while_the_runtime_stays_free() {
    block_on(async {
        let (tx, rx) = multiproc::channel::<u32>().unwrap();
        let (back_tx, mut back) = multiproc::channel::<u32>().unwrap();
        let child = multiproc::spawn(echo_twice, (rx, back_tx)).unwrap();
        // A second task on the same (only) thread must progress while we await.
        let ticker = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            "ticked"
        });
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Ok(x) = back.recv_async().await {
            got.push(x);
        }
        assert_eq!(got, [0, 0, 1, 1, 2, 2]);
        assert_eq!(child.join_async().await.unwrap(), 3);
        assert_eq!(ticker.await.unwrap(), "ticked");
    });
}

#[multiproc::test]
fn a_dropped_wait_leaves_the_channel_usable() {
    block_on(async {
        let (tx, mut rx) = multiproc::channel::<u32>().unwrap();
        // Nothing to receive: the wait times out and is dropped mid-way.
        let early = tokio::time::timeout(Duration::from_millis(20), rx.recv_async()).await;
        assert!(early.is_err());
        tx.send(5).unwrap();
        assert_eq!(rx.recv_async().await.unwrap(), 5);
        // And the blocking API still works after async use.
        tx.send(6).unwrap();
        assert_eq!(rx.recv_timeout(support::DEADLINE).unwrap(), 6);
        drop(tx);
        assert!(rx.recv_async().await.unwrap_err().is_disconnected());
    });
}

#[multiproc::test]
fn queues_and_pool_results_are_awaitable() {
    block_on(async {
        let queue = Queue::<u32>::new().unwrap();
        let child = multiproc::spawn(take_from, (queue.clone(),)).unwrap();
        queue.put(4).unwrap();
        assert_eq!(child.join_async().await.unwrap(), 40);
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get_async().await })
        };
        queue.put(9).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 9);

        let pool = Pool::new(2).unwrap();
        let results: Vec<_> = (0..6)
            .map(|x| pool.apply_async(square, (x,)).unwrap())
            .collect();
        let mut squares = Vec::new();
        for r in results {
            squares.push(r.await.unwrap());
        }
        assert_eq!(squares, [0, 1, 4, 9, 16, 25]);
    });
}
