fn plain(x: u32) -> u32 {
    x
}

#[multiproc::main]
fn main() {
    let _ = multiproc::spawn(plain, (1,));
}
