use multiproc::Process;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job;

#[multiproc::process]
impl Job {
    fn run(&self) -> u32 {
        1
    }
}

fn main() {
    // One error for the mistake above, none for its use here.
    let _: u32 = Job.spawn().unwrap().join().unwrap();
}
