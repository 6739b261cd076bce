//! Helper for `tests/orphans.rs`: a parent holding live children, to be SIGKILLed.
//!
//! Spawns a child from the main thread, one from a short-lived thread, and one that spawns a
//! grandchild; prints `pid <n>` for each of the four, then `ready`, then blocks until killed.
use std::time::Duration;

use multiproc::Sender;

#[multiproc::process]
fn sleeper() {
    std::thread::sleep(Duration::from_secs(600));
}

#[multiproc::process]
fn parent_of_one(report: Sender<u32>) {
    let grandchild = multiproc::spawn(sleeper, ()).expect("spawn grandchild");
    report.send(grandchild.pid()).expect("report");
    let _ = grandchild.join();
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let a = multiproc::spawn(sleeper, ())?;
    let b = std::thread::spawn(|| multiproc::spawn(sleeper, ()))
        .join()
        .expect("spawning thread")?;
    let (tx, rx) = multiproc::channel()?;
    let c = multiproc::spawn(parent_of_one, (tx,))?;
    let grandchild = rx.recv()?;
    for pid in [a.pid(), b.pid(), c.pid(), grandchild] {
        println!("pid {pid}");
    }
    println!("ready");
    // Block until killed: nobody ever sends on this channel.
    let (_keep, never) = multiproc::channel::<()>()?;
    let _ = never.recv();
    Ok(())
}
