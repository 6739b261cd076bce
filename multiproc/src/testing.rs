//! Spawning from inside `cargo test`.
//!
//! libtest owns `main`, so `#[multiproc::test]` runs the hook at the top of the test instead.
//! A child re-runs the test binary filtered to that one test (`<name> --exact`), whose hook
//! dispatches to the entry point before the test body runs. No dummy test, feature flag or
//! `harness = false` is needed.

pub(crate) fn hook(module_path: &str, fn_name: &str) {
    crate::bootstrap::test_hook(module_path, fn_name)
}
