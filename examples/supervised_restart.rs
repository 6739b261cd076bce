//! Supervision: a flaky worker under a one-for-one supervisor. It takes jobs from a `Queue`
//! (which outlives it, so a restarted worker carries on where the last one crashed) and
//! panics on every job divisible by 5. The supervisor restarts it twice; the third crash
//! within 10 s is more than its intensity allows, so it gives up and says why.
//!
//! Run: `cargo run --example supervised_restart`
//!
//! Prints each job the workers finished (`worker 1: job 1` ...), and then the supervisor's
//! error, naming the last crash.
// ANCHOR: worker
use std::time::Duration;

use multiproc::{Queue, Restart, Strategy, Supervisor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Worker {
    incarnation: u32,
    jobs: Queue<u32>,
}

#[multiproc::process]
impl Worker {
    fn run(self) {
        while let Ok(job) = self.jobs.get() {
            assert!(job % 5 != 0, "job {job} is cursed");
            println!("worker {}: job {job}", self.incarnation);
        }
    }
}
// ANCHOR_END: worker

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let jobs = Queue::new()?;
    for job in 1..=20 {
        jobs.put(job)?;
    }
    let queue = jobs.clone();
    let mut incarnation = 0;
    let supervisor = Supervisor::builder()
        .name("flaky-workers")
        .strategy(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(10)) // at most 2 restarts within 10 s
        .child("worker", Restart::Permanent, move || {
            incarnation += 1;
            Worker {
                incarnation,
                jobs: queue.clone(),
            }
        })
        .start()?;
    match supervisor.wait() {
        Ok(report) => println!("done: {report:?}"),
        Err(e) => println!("{e}"),
    }
    Ok(())
}
// ANCHOR_END: main
