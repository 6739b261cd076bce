#[multiproc::test]
async fn spawns() {}

fn main() {}
