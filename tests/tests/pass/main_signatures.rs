//! `#[multiproc::main]` keeps any `main` signature.
use std::process::ExitCode;

#[multiproc::main]
fn main() -> ExitCode {
    ExitCode::SUCCESS
}
