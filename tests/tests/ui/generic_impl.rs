use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job<T>(T);

#[multiproc::process]
impl<T: Clone> Job<T> {
    fn run(self) -> u32 {
        1
    }
}

fn main() {}
