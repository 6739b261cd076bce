use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job;

#[multiproc::process]
impl Default for Job {
    fn default() -> Self {
        Job
    }
}

fn main() {}
