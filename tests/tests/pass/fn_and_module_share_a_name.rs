//! A `#[process]` fn's name can be shared with a module, and the fn still called directly.
mod worker {
    pub fn helper() -> u8 {
        1
    }
}

#[multiproc::process]
fn worker(x: u8) -> u8 {
    x + worker::helper()
}

#[multiproc::main]
fn main() {
    assert_eq!(worker(1), 2);
    let handle = multiproc::spawn(worker, (1,)).unwrap();
    assert_eq!(handle.join().unwrap(), 2);
}
