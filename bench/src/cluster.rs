//! Cluster rows (the `cluster` feature; need `nats-server` on PATH): the cluster pool and
//! queues on loopback beside Python's `BaseManager` tutorial model, and one remote task
//! beside a bare NATS request/reply round trip, in the same run.

use std::time::{Duration, Instant};

use multiproc::cluster::Cluster;
use multiproc::cluster::testing::NatsServer;

use super::{Python, measure, versus};

#[multiproc::process]
fn square(n: u64) -> u64 {
    n * n
}

/// A node host: serves this build's pool tasks until shut down.
#[multiproc::process]
fn serve_node(url: String, workers: usize) {
    let cluster = Cluster::connect(&url).expect("the bench's server");
    cluster
        .node()
        .workers(workers)
        .serve()
        .expect("the node serves");
}

pub(super) fn rows(quick: bool) -> multiproc::Result<()> {
    if !NatsServer::available() {
        println!("(cluster rows skipped: nats-server is not on PATH)");
        return Ok(());
    }
    let python = Python::find();
    let server = NatsServer::start()?;
    let url = server.url();
    let cluster = Cluster::connect(&url)?;

    // 2 nodes of one worker each: Python's tutorial has 2 worker processes.
    let nodes = start_nodes(&url, 2, 1)?;
    let pool = cluster.pool()?;
    pool.map(square, 0..200u64)?; // warm-up: workers started, consumers made
    let n = if quick { 2_000 } else { 20_000 };
    let t = Instant::now();
    let squares = pool.map(square, 0..n)?;
    let ours = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(squares[3], 9);
    let py = python.get("manager_tasks", "py.manager_tasks_2workers.msgs_per_s");
    versus("cluster pool.map, 2 nodes, trivial (/s)", ours, py, true);

    let queue = cluster.queue::<multiproc::Bytes>("bench")?;
    let items = if quick { 1_000 } else { 5_000 };
    let t = Instant::now();
    for _ in 0..items {
        queue.put(multiproc::Bytes::from(vec![0_u8; 64]))?;
    }
    for _ in 0..items {
        queue.get()?;
    }
    let ours = items as f64 / t.elapsed().as_secs_f64();
    let py = python.get("manager_queue", "py.manager_queue_64B.msgs_per_s");
    versus("cluster queue put + get, 64 B (items/s)", ours, py, true);

    // One remote task, against the floor: a bare request/reply through the same server.
    let trips = if quick { 200 } else { 2_000 };
    let one = measure(trips, || {
        assert_eq!(pool.apply(square, (3,)).expect("apply"), 9);
    });
    let floor = bare_round_trip(&url, trips);
    println!(
        "{:<44} {:>10.3e} {:>10.3e} {:>6.2}x  bare NATS request/reply (x = times the floor)",
        "one remote task, apply (µs)",
        one.median() * 1e6,
        floor * 1e6,
        one.median() / floor
    );
    stop_nodes(nodes)?;

    if !quick {
        for count in [1, 2, 4] {
            let nodes = start_nodes(&url, count, 1)?;
            let pool = cluster.pool()?;
            pool.map(square, 0..200u64)?;
            let t = Instant::now();
            pool.map(square, 0..n)?;
            println!(
                "{:<44} {:>10.3e}",
                format!("cluster pool.map, {count} nodes x 1 worker (/s)"),
                n as f64 / t.elapsed().as_secs_f64()
            );
            stop_nodes(nodes)?;
        }
    }
    drop(server);
    Ok(())
}

fn start_nodes(
    url: &str,
    n: usize,
    workers: usize,
) -> multiproc::Result<Vec<multiproc::JoinHandle<()>>> {
    (0..n)
        .map(|_| multiproc::spawn(serve_node, (url.to_string(), workers)))
        .collect()
}

fn stop_nodes(nodes: Vec<multiproc::JoinHandle<()>>) -> multiproc::Result<()> {
    for node in nodes {
        node.shutdown(Duration::from_secs(10))?;
    }
    Ok(())
}

/// The median of `trips` request/reply round trips through the server at `url`, between two
/// connections of this process: the floor under one remote task.
fn bare_round_trip(url: &str, trips: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        use futures_util::StreamExt;
        let server = async_nats::connect(url).await.expect("connect");
        let client = async_nats::connect(url).await.expect("connect");
        let mut requests = server.subscribe("bench.echo").await.expect("subscribe");
        server.flush().await.expect("flush");
        let responder = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = server.publish(reply, request.payload).await;
                }
            }
        });
        client.flush().await.expect("flush");
        // The subscription reaches the server's routing a moment after its flush: until a
        // first request finds it, "no responders".
        let started = Instant::now();
        while client
            .request("bench.echo", vec![3_u8].into())
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no echo responder"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut samples = Vec::with_capacity(trips);
        for _ in 0..=trips {
            let t = Instant::now();
            client
                .request("bench.echo", vec![3_u8].into())
                .await
                .expect("a reply");
            samples.push(t.elapsed());
        }
        responder.abort();
        samples.remove(0); // warm-up
        samples.sort();
        samples[samples.len() / 2].as_secs_f64()
    })
}
