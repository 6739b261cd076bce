// The user-facing contract of issue 14, as written there: `.ci/outside-cluster.sh` compiles it
// in a fresh crate outside the repository (running it needs a server on 4222 and a worker
// host, which `examples/distributed_master_worker.rs` plays in one binary).
#![allow(dead_code)] // `worker` is what another host runs
use multiproc::cluster::Cluster;
use std::time::Duration;

#[multiproc::process]
fn square(n: u64) -> u64 { n * n }

// the master (Python: QueueManager(address=('', 5000), authkey=b'abc').start())
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let cluster = Cluster::connect("nats://127.0.0.1:4222")?; // Cluster::builder() for credentials, TLS, a name
    let tasks = cluster.queue::<u64>("tasks")?;       // durable: lives in the server, not in this process
    let results = cluster.queue::<String>("results")?;
    for n in 0..10 { tasks.put(n)?; }
    for _ in 0..10 { println!("{}", results.get_timeout(Duration::from_secs(10))?); }

    let pool = cluster.pool()?;                       // every node serving this build, each task in a local isolated worker
    let squares: Vec<u64> = pool.map(square, 0..10_000u64)?;
    assert_eq!(squares[3], 9);
    Ok(())
}

// a worker host (Python: m.connect(); m.get_task_queue())
fn worker(url: &str) -> multiproc::Result<()> {
    let cluster = Cluster::connect(url)?;
    let (tasks, results) = (cluster.queue::<u64>("tasks")?, cluster.queue::<String>("results")?);
    while let Ok(n) = tasks.get_timeout(Duration::from_secs(1)) {
        results.put(format!("{n} * {n} = {}", n * n))?;
    }
    cluster.node().workers(4).serve()              // runs pool tasks until asked to shut down
}
