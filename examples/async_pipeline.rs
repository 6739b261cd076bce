//! Processes under an async runtime: a `#[tokio::main]` program (with `#[multiproc::main]`
//! below it, so that the hook runs before the runtime starts) runs a two-stage pipeline of child processes and a `Pool`, and awaits
//! every result without blocking tokio's thread: `recv_async` on the last stage's channel,
//! `join_async` on the stages, and pool results awaited directly. The runtime has a single
//! thread, and a tokio timer on it ticks while we wait for the slow first stage: nothing
//! blocks it.
//!
//! Run: `cargo run --example async_pipeline`
//!
//! Prints `hash(job-0) = ...` for four jobs in order, `pool: 0 1 4 9 16 25 36 49`,
//! `stages handled 4 and 4 items`, then that the timer ticked.

// ANCHOR: stages
use multiproc::{Receiver, Sender};

/// Stage 1: a job name to its bytes' FNV-1a hash (imagine a slow, crash-prone C library:
/// 5 ms a job, which the parent spends awaiting, its thread free for other tasks).
#[multiproc::process]
fn hash(input: Receiver<String>, output: Sender<(String, u64)>) -> usize {
    let mut n = 0;
    for job in input {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let h = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        output.send((job, h)).expect("next stage");
        n += 1;
    }
    n
}

/// Stage 2: format the result.
#[multiproc::process]
fn format(input: Receiver<(String, u64)>, output: Sender<String>) -> usize {
    input
        .into_iter()
        .map(|(job, h)| {
            output
                .send(format!("hash({job}) = {h:016x}"))
                .expect("parent")
        })
        .count()
}
// ANCHOR_END: stages

#[multiproc::process]
fn square(x: u64) -> u64 {
    x * x
}

// ANCHOR: main
// `#[tokio::main]` first: `#[multiproc::main]` then puts the hook before the runtime starts
// (in a child it runs the child's entry point and never returns).
#[tokio::main(flavor = "current_thread")]
#[multiproc::main]
async fn main() -> multiproc::Result<()> {
    let (jobs_tx, jobs_rx) = multiproc::channel()?;
    let (hashed_tx, hashed_rx) = multiproc::channel()?;
    let (lines_tx, mut lines_rx) = multiproc::channel::<String>()?;
    let first = multiproc::spawn(hash, (jobs_rx, hashed_tx))?;
    let second = multiproc::spawn(format, (hashed_rx, lines_tx))?;

    // One thread runs everything: this timer ticks only while our awaits leave it free.
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });

    for i in 0..4 {
        jobs_tx.send(format!("job-{i}"))?;
    }
    drop(jobs_tx); // end of input: the stages finish in turn
    while let Ok(line) = lines_rx.recv_async().await {
        println!("{line}");
    }

    let pool = multiproc::Pool::new(2)?;
    let pending: Vec<_> = (0..8)
        .map(|x| pool.apply_async(square, (x,)))
        .collect::<multiproc::Result<_>>()?;
    let mut squares = Vec::new();
    for result in pending {
        squares.push(result.await?.to_string());
    }
    println!("pool: {}", squares.join(" "));

    let (a, b) = (first.join_async().await?, second.join_async().await?);
    println!("stages handled {a} and {b} items");
    ticker.abort();
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed) > 0;
    println!("the runtime's timer ticked while we waited: {ticked}");
    Ok(())
}
// ANCHOR_END: main
