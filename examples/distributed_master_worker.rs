//! Distributed master and workers: Python's `BaseManager` tutorial (a task queue and a result
//! queue served to workers on other machines) on NATS. One binary, two roles:
//!
//! - `distributed_master_worker` starts a `nats-server` of its own (from PATH), two worker
//!   processes that connect to it as other hosts would, puts ten tasks and prints the ten
//!   results; then maps `square` over 10,000 numbers on the workers, which serve as cluster
//!   pool nodes once the task queue is empty.
//! - `distributed_master_worker master nats://host:4222` does the same against a server of
//!   yours (add `--no-local-workers` to leave all the work to workers on other hosts); `distributed_master_worker worker nats://host:4222` is one worker, to run on other
//!   machines (it takes tasks until the queue has been empty for a second, then serves pool
//!   tasks until SIGTERM or Ctrl-C).
//!
//! Run: `cargo run --example distributed_master_worker --features cluster`
//!
//! Prints `10 tasks, 2 workers`, then one `n * n = m` line per task (in the order the
//! workers finished them), `10 results`, `pool: 10000 squares, squares[3] = 9`, and
//! `spawned: Tally = 5050` (a process started on one of the worker nodes).
// ANCHOR: prelude
use std::time::Duration;

use multiproc::cluster::Cluster;
use multiproc::cluster::testing::NatsServer;

#[multiproc::process]
fn square(n: u64) -> u64 {
    n * n
}
// ANCHOR_END: prelude

// ANCHOR: worker
/// A worker host (Python: `m.connect(); m.get_task_queue()`): takes tasks until the queue
/// has been empty for a second, puts one result per task, then runs pool tasks until asked
/// to shut down. Returns how many queue tasks it did.
#[multiproc::process]
fn worker(url: String) -> usize {
    let run = || -> multiproc::Result<usize> {
        let cluster = Cluster::connect(&url)?;
        let tasks = cluster.queue::<u64>("tasks")?;
        let results = cluster.queue::<String>("results")?;
        let mut done = 0;
        while let Ok(n) = tasks.get_timeout(Duration::from_secs(1)) {
            results.put(format!("{n} * {n} = {}", n * n))?;
            done += 1;
        }
        cluster.node().workers(2).serve()?;
        Ok(done)
    };
    run().unwrap_or_else(|e| panic!("worker: {e}"))
}
// ANCHOR_END: worker

/// Adds up 1..=upto, in a process of its own on a cluster node.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tally {
    upto: u64,
}

#[multiproc::process]
impl Tally {
    fn run(self) -> u64 {
        (1..=self.upto).sum::<u64>()
    }
}

// ANCHOR: master
/// The master (Python: `QueueManager(address=..., authkey=...).start()`): the queues live in
/// the NATS server, so the master only puts tasks and reads results.
fn master(url: &str, workers: usize) -> multiproc::Result<()> {
    const TASKS: u64 = 10;
    println!("{TASKS} tasks, {workers} workers");
    let cluster = Cluster::connect(url)?;
    let tasks = cluster.queue::<u64>("tasks")?;
    let results = cluster.queue::<String>("results")?;
    let handles = (0..workers)
        .map(|_| multiproc::spawn(worker, (url.to_string(),)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for n in 0..TASKS {
        tasks.put(n)?;
    }
    for _ in 0..TASKS {
        println!("{}", results.get_timeout(Duration::from_secs(10))?);
    }
    println!("{TASKS} results");

    // Every node that serves this build; each task in a crash-isolated worker there.
    let pool = cluster.pool()?;
    let squares: Vec<u64> = pool.map(square, 0..10_000u64)?;
    println!(
        "pool: {} squares, squares[3] = {}",
        squares.len(),
        squares[3]
    );
    // ANCHOR: spawn
    // One process of its own on some node (Python: `Process(target=...)`, on another host).
    let handle = cluster.spawn(Tally { upto: 100 })?;
    eprintln!(
        "{} runs on node {} as pid {}",
        handle.name(),
        handle.node(),
        handle.pid()
    );
    println!("spawned: Tally = {}", handle.join()?);
    // ANCHOR_END: spawn
    for handle in handles {
        handle.shutdown(Duration::from_secs(10))?;
    }
    Ok(())
}
// ANCHOR_END: master

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {
            // A server of our own, on a free loopback port, gone when we are.
            let server = NatsServer::start()?;
            master(&server.url(), 2)
        }
        ["master", url] => master(url, 2),
        // The master alone: the workers run elsewhere (`worker URL` on other hosts).
        ["master", url, "--no-local-workers"] => master(url, 0),
        ["worker", url] => {
            // SIGTERM or Ctrl-C ends the node once its workers have stopped.
            multiproc::shutdown_on_signals(Duration::from_secs(10))?;
            let done = worker(url.to_string());
            println!("worker: {done} tasks");
            Ok(())
        }
        // Only a pool node of this build (see the book's "Across machines").
        ["node", url] => Cluster::connect(url)?.node().workers(2).serve(),
        _ => Err(multiproc::Error::other(
            "usage: distributed_master_worker [master URL [--no-local-workers] | worker URL | node URL]",
        )),
    }
}
