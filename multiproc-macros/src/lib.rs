//! Procedural macros for [multiproc](https://docs.rs/multiproc). Depend on `multiproc`, which
//! re-exports them, not on this crate.
#![warn(missing_docs)]

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Makes a free `fn`, or an `impl` block with `fn run(self) -> R`, spawnable in its own
/// process. See `multiproc::process`.
#[proc_macro_attribute]
pub fn process(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::process(args.into(), item.into()).into()
}

/// Runs the multiproc hook first thing in `main`. See `multiproc::main`.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(args.into(), item.into()).into()
}

/// `#[test]` that runs the multiproc hook first. See `multiproc::test`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args.into(), item.into()).into()
}
