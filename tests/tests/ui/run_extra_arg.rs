use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job;

#[multiproc::process]
impl Job {
    fn run(self, times: u32) -> u32 {
        times
    }
}

fn main() {}
