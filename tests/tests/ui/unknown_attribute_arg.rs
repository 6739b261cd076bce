#[multiproc::process(name = "worker")]
fn work() {}

fn main() {}
