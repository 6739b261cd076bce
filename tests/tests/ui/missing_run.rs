use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job;

#[multiproc::process]
impl Job {
    fn work(self) -> u32 {
        1
    }
}

fn main() {}
