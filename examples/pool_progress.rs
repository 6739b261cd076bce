//! A progress bar over a pool's results: `Imap` (and `ImapUnordered`) is an
//! `ExactSizeIterator`, so `indicatif`'s `.progress()` knows the total from the start. Python
//! users write `tqdm(pool.imap(f, items), total=len(items))`; here the length comes along.
//!
//! Run: `cargo run --example pool_progress`
//!
//! Draws a bar on stderr (when it is a terminal) while 200 tasks of 10 ms run on 4 workers,
//! then prints `200 results, sum of squares 2646700`.
// ANCHOR: main
use std::time::Duration;

use indicatif::{ProgressBar, ProgressIterator, ProgressStyle};
use multiproc::Pool;

#[multiproc::process]
fn slow_square(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(10));
    n * n
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let pool = Pool::new(4)?;
    let results = pool.imap(slow_square, 0..200_u64)?;
    let bar = ProgressBar::new(results.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks, {eta} left")
            .expect("a valid template"),
    );
    let mut sum = 0;
    let mut count = 0;
    for square in results.progress_with(bar) {
        sum += square?;
        count += 1;
    }
    println!("{count} results, sum of squares {sum}");
    Ok(())
}
// ANCHOR_END: main
