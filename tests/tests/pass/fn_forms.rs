//! Free fns with 0 to 8 arguments, patterns, visibility and doc comments.
use std::collections::BTreeMap;

/// Documented.
#[multiproc::process]
pub fn none() {}

#[multiproc::process]
pub(crate) fn one(mut x: u8) -> u8 {
    x += 1;
    x
}

#[multiproc::process]
fn pattern((a, b): (u8, u8), map: BTreeMap<String, Vec<u8>>) -> usize {
    a as usize + b as usize + map.len()
}

#[multiproc::process]
#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u64 {
    [a, b, c, d, e, f, g, h].iter().map(|&x| x as u64).sum()
}

#[multiproc::process]
fn result(ok: bool) -> Result<u8, String> {
    if ok { Ok(1) } else { Err("no".into()) }
}

#[multiproc::main]
fn main() -> Result<(), multiproc::Error> {
    none();
    assert_eq!(one(1), 2);
    assert_eq!(multiproc::spawn(one, (1,))?.join()?, 2);
    assert_eq!(multiproc::spawn(pattern, ((1, 2), BTreeMap::new()))?.join()?, 3);
    assert_eq!(multiproc::spawn(eight, (1, 1, 1, 1, 1, 1, 1, 1))?.join()?, 8);
    assert_eq!(multiproc::spawn(result, (false,))?.join()?, Err("no".to_string()));
    multiproc::spawn(none, ())?.join()?;
    Ok(())
}
