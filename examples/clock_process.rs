//! A struct with `run` as a process: Python's `class ClockProcess(Process): def run(self)`.
//! Two clocks run concurrently, each printing its pid and the time.
//!
//! Run: `cargo run --example clock_process`
//!
//! Prints interleaved lines `clock <id> pid <pid> at <seconds>s`, then `both clocks done: 6`.

// ANCHOR: process
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use multiproc::Process;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ClockProcess {
    id: u32,
    times: u32,
    interval: Duration,
}

#[multiproc::process]
impl ClockProcess {
    fn run(self) -> u32 {
        for _ in 0..self.times {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            println!(
                "clock {} pid {} at {:.3}s",
                self.id,
                std::process::id(),
                now.as_secs_f64()
            );
            std::thread::sleep(self.interval);
        }
        self.times
    }
}
// ANCHOR_END: process

// ANCHOR: main
#[multiproc::main]
fn main() -> Result<(), multiproc::Error> {
    let interval = Duration::from_millis(50);
    let a = ClockProcess {
        id: 1,
        times: 3,
        interval,
    }
    .spawn()?;
    let b = ClockProcess {
        id: 2,
        times: 3,
        interval,
    }
    .spawn()?;
    assert_ne!(a.pid(), b.pid());
    let total = a.join()? + b.join()?;
    println!("both clocks done: {total}");
    assert_eq!(total, 6);
    Ok(())
}
// ANCHOR_END: main
