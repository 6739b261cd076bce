//! A child that panics: the parent gets a typed error carrying the message and `file:line`,
//! and goes on. Python would print a traceback in the child and report exit code 1.
//!
//! Run: `cargo run --example panic_in_child`
//!
//! The child's own panic message appears on stderr; stdout shows the parent's report:
//! `child failed: child `divide-2` (pid N) panicked: 'attempt to divide by zero' at ...`.
// ANCHOR: divide
use multiproc::ErrorKind;

#[multiproc::process]
fn divide(a: i64, b: i64) -> i64 {
    if b == 0 {
        panic!("attempt to divide by zero");
    }
    a / b
}
// ANCHOR_END: divide

// ANCHOR: main
#[multiproc::main]
fn main() -> Result<(), multiproc::Error> {
    assert_eq!(multiproc::spawn(divide, (84, 2))?.join()?, 42);

    let err = multiproc::spawn(divide, (1, 0))?.join().unwrap_err();
    println!("child failed: {err}");
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let panic = err.remote_panic().expect("a panic carries its details");
    println!("message: {}", panic.message());
    println!("location: {}", panic.location().unwrap_or("unknown"));
    assert_eq!(panic.message(), "attempt to divide by zero");
    assert!(
        panic
            .location()
            .is_some_and(|l| l.contains("panic_in_child.rs"))
    );
    Ok(())
}
// ANCHOR_END: main
