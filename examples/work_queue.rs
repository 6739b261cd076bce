//! Work queue: N consumer processes share one `JoinableQueue`; the producer puts every task,
//! waits with `join` until each one is marked done, then closes the queue so the consumers
//! stop. Python's `JoinableQueue` recipe, with no sentinel values.
//!
//! Run: `cargo run --example work_queue`
//!
//! Prints `3 workers, 30 tasks`, `all 30 tasks done`, the sum of the results, and how many
//! tasks the workers handled together (which worker took which task varies from run to run).
// ANCHOR: worker
use multiproc::{ErrorKind, JoinableQueue, Sender};

#[multiproc::process]
fn worker(tasks: JoinableQueue<u64>, results: Sender<u64>) -> usize {
    let mut handled = 0;
    loop {
        let n = match tasks.get() {
            Ok(n) => n,
            // Closed and drained: the producer has nothing more for us.
            Err(e) if e.kind() == ErrorKind::Closed => return handled,
            // A panic reaches the parent as this worker's error.
            Err(e) => panic!("cannot get a task: {e}"),
        };
        results.send(n * n).expect("the parent holds the results");
        tasks.task_done().expect("one task_done per get");
        handled += 1;
    }
}
// ANCHOR_END: worker

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    const WORKERS: usize = 3;
    const TASKS: u64 = 30;
    println!("{WORKERS} workers, {TASKS} tasks");

    let tasks = JoinableQueue::<u64>::with_maxsize(8)?;
    let (results_tx, results) = multiproc::channel::<u64>()?;
    let handles = (0..WORKERS)
        .map(|_| multiproc::spawn(worker, (tasks.clone(), results_tx.clone())))
        .collect::<multiproc::Result<Vec<_>>>()?;
    drop(results_tx);

    for n in 1..=TASKS {
        tasks.put(n)?; // waits while 8 tasks are queued
    }
    tasks.join()?; // every task got and marked done, in whichever worker
    println!("all {TASKS} tasks done");
    tasks.close()?; // the workers' next `get` reports Closed

    let mut handled = 0;
    for handle in handles {
        handled += handle.join()?;
    }
    let sum: u64 = results.iter().sum();
    println!("sum of squares: {sum}");
    println!("the workers handled {handled} tasks");
    Ok(())
}
// ANCHOR_END: main
