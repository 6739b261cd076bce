#[multiproc::process]
struct Job;

fn main() {}
