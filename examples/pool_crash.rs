//! A pool that survives its workers: task 7 kills its own worker (SIGKILL) in the middle of
//! a map. That task reports how its worker died; every other task, including those sharing
//! a chunk with it, returns its result; then the same pool runs another map.
//!
//! Run: `cargo run --example pool_crash`
//!
//! Prints a line per task (`task 7: failed: child `crash-demo-..` (pid ..) was killed by signal
//! 9 (SIGKILL) ...`, the others `task N: N0`), then the result of a second map.
// ANCHOR: risky
use multiproc::Pool;

#[multiproc::process]
fn risky(n: u32) -> u32 {
    if n == 7 {
        // A crash no `catch_unwind` can stop: a segfault, an abort in C code, the OOM killer.
        // SAFETY: raise signals only this process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    n * 10
}
// ANCHOR_END: risky

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let pool = Pool::builder()
        .workers(3)
        .name("crash-demo")
        .chunksize(4) // task 7 shares its chunk with 4, 5 and 6
        .build()?;
    for (task, result) in pool.imap(risky, 0..12)?.enumerate() {
        match result {
            Ok(value) => println!("task {task}: {value}"),
            Err(e) => println!("task {task}: failed: {e}"),
        }
    }
    // A replacement worker took the dead one's place.
    println!("again: {:?}", pool.map(risky, [1, 2, 3])?);
    Ok(())
}
// ANCHOR_END: main
