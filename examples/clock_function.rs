//! A function as a process: Python's `Process(target=clock, args=(5, 1))`.
//!
//! Run: `cargo run --example clock_function`
//!
//! Prints five ticks from the child (with its pid), then the value `clock` returned.

// ANCHOR: clock
use std::time::Duration;

#[multiproc::process]
fn clock(times: u32, interval: Duration) -> u32 {
    for tick in 1..=times {
        println!("tick {tick}/{times} from pid {}", std::process::id());
        std::thread::sleep(interval);
    }
    times
}
// ANCHOR_END: clock

// ANCHOR: main
#[multiproc::main]
fn main() -> Result<(), multiproc::Error> {
    let child = multiproc::spawn(clock, (5, Duration::from_millis(50)))?;
    println!("started `{}` as pid {}", child.name(), child.pid());
    let ticks = child.join()?;
    println!("clock returned {ticks}");
    assert_eq!(ticks, 5);
    Ok(())
}
// ANCHOR_END: main
