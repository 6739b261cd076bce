//! UI tests: each file in `ui/` must fail to compile with the message in its `.stderr`; each
//! file in `pass/` must compile and run. Regenerate snapshots with `TRYBUILD=overwrite` on the
//! pinned toolchain (rust-toolchain.toml) and review the diff like code.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
