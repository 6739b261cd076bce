//! `crate = "..."` for code that reaches multiproc through a re-export.
mod reexport {
    pub use multiproc as mp;
}

#[multiproc::process(crate = "reexport::mp")]
fn id(x: u8) -> u8 {
    x
}

#[multiproc::main(crate = "reexport::mp")]
fn main() {
    assert_eq!(reexport::mp::spawn(id, (3,)).unwrap().join().unwrap(), 3);
}
