//! Fan-out, fan-in: scatter tasks over N worker processes, gather the results in input order.
//! Each worker has its own inbox (tasks go round-robin); all share one outbox, and every
//! result carries its task's index so the parent can put them back in order.
//!
//! Run: `cargo run --example fan_out_fan_in`
//!
//! Prints `4 workers, 20 tasks`, the 20 results in input order, then which worker handled how
//! many tasks (5 each).
// ANCHOR: worker
use multiproc::{Receiver, Sender};

/// Collatz stopping time: a little CPU work per task.
fn steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

#[multiproc::process]
fn worker(id: usize, tasks: Receiver<(usize, u64)>, results: Sender<(usize, usize, u32)>) -> usize {
    let mut done = 0;
    for (index, n) in tasks {
        results.send((index, id, steps(n))).expect("gather");
        done += 1;
    }
    done
}
// ANCHOR_END: worker

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    const WORKERS: usize = 4;
    let inputs: Vec<u64> = (1..=20).map(|i| i * 7).collect();
    println!("{WORKERS} workers, {} tasks", inputs.len());

    let (results_tx, results) = multiproc::channel()?;
    let mut inboxes = Vec::new();
    let mut handles = Vec::new();
    for id in 0..WORKERS {
        let (tx, rx) = multiproc::channel()?;
        inboxes.push(tx);
        handles.push(multiproc::spawn(worker, (id, rx, results_tx.clone()))?);
    }
    drop(results_tx); // only the workers hold senders now

    // Scatter from a thread while this one gathers, so that results come back while tasks
    // still go out. (Scattering everything first would not block: an unbounded `channel()`
    // never waits for a slow reader.)
    let tasks = inputs.clone();
    let scatter = std::thread::spawn(move || {
        for (index, n) in tasks.into_iter().enumerate() {
            inboxes[index % WORKERS].send((index, n))?;
        }
        Ok::<(), multiproc::Error>(())
        // `inboxes` drop here: each worker ends when its inbox is drained
    });

    // Gather, then restore input order.
    let mut gathered: Vec<(usize, usize, u32)> = results.into_iter().collect();
    scatter.join().expect("scatter thread")?;
    gathered.sort_by_key(|&(index, _, _)| index);
    assert_eq!(gathered.len(), inputs.len());
    for ((index, _, result), n) in gathered.iter().zip(&inputs) {
        assert_eq!(*result, steps(*n), "task {index}");
        println!("steps({n}) = {result}");
    }
    for (id, handle) in handles.into_iter().enumerate() {
        println!("worker {id} handled {} tasks", handle.join()?);
    }
    Ok(())
}
// ANCHOR_END: main
