//! Helper for `tests/shutdown.rs`: a parent under `shutdown_on_signals`, to be sent SIGTERM.
//!
//! Spawns a cooperative child, a child with a cooperative grandchild, and a stubborn child
//! that ignores the request; prints `pid <n>` for each of the four, then `ready`, and blocks.
//! On SIGTERM the cooperative ones print `<name> stopped cleanly` and return; the stubborn
//! one is killed after the grace period (3 s), then the parent ends by SIGTERM.
use std::time::Duration;

use multiproc::Sender;

fn wait_for_the_request() {
    while !multiproc::shutdown_requested() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[multiproc::process]
fn cooperative(name: String) {
    wait_for_the_request();
    println!("{name} stopped cleanly");
}

#[multiproc::process]
fn with_grandchild(report: Sender<u32>) {
    let grandchild =
        multiproc::spawn(cooperative, ("grandchild".to_string(),)).expect("spawn grandchild");
    report.send(grandchild.pid()).expect("report");
    wait_for_the_request();
    grandchild.join().expect("the grandchild stops too");
    println!("middle stopped cleanly");
}

#[multiproc::process]
fn stubborn() {
    std::thread::sleep(Duration::from_secs(600));
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    multiproc::shutdown_on_signals(Duration::from_secs(3))?;
    let a = multiproc::spawn(cooperative, ("first".to_string(),))?;
    let (tx, rx) = multiproc::channel()?;
    let b = multiproc::spawn(with_grandchild, (tx,))?;
    let grandchild = rx.recv()?;
    let c = multiproc::spawn(stubborn, ())?;
    for pid in [a.pid(), b.pid(), grandchild, c.pid()] {
        println!("pid {pid}");
    }
    println!("ready");
    let (_keep, never) = multiproc::channel::<()>()?;
    let _ = never.recv();
    Ok(())
}
