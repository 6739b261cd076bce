use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job;

#[multiproc::process]
impl Job {
    async fn run(self) -> u32 {
        1
    }
}

fn main() {}
