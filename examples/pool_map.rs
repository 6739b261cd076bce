//! A pool: Python's tutorial `Pool(5).map(clock, [1] * 20)`, with each task sleeping 50 ms
//! instead of a second. The pids show five workers taking turns.
//!
//! Run: `cargo run --example pool_map`
//!
//! Prints one line per task with the pid of the worker that ran it, in input order, then how
//! many distinct workers ran the 20 tasks (at most 5, none of them the parent).
// ANCHOR: clock
use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::Pool;

#[multiproc::process]
fn clock(millis: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(millis));
    std::process::id()
}
// ANCHOR_END: clock

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let pool = Pool::new(5)?;
    let pids = pool.map(clock, [50; 20])?;
    for (task, pid) in pids.iter().enumerate() {
        println!("task {task:2} ran in pid {pid}");
    }
    let workers: BTreeSet<u32> = pids.iter().copied().collect();
    assert!(!workers.contains(&std::process::id()));
    println!("20 tasks, {} workers", workers.len());
    Ok(())
}
// ANCHOR_END: main
