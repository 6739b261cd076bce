#[multiproc::process]
fn open() -> std::fs::File {
    std::fs::File::open("/dev/null").unwrap()
}

fn main() {}
