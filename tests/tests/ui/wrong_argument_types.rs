#[multiproc::process]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[multiproc::main]
fn main() {
    let _ = multiproc::spawn(add, ("one", 2));
}
