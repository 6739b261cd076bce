#[multiproc::process]
fn double<T: Copy>(x: T) -> (T, T) {
    (x, x)
}

fn main() {}
