//! This process's hook: which one it ran (`#[multiproc::main]` / [`init`](crate::init), or
//! `#[multiproc::test]`), so that its children are re-executed to reach the same one, and
//! what it resolves about itself once, before the executable can be replaced (its path and
//! its build fingerprint).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::sys;

/// Which hook this process ran; children are re-executed so that they reach the same hook.
#[derive(Debug, Clone)]
pub(crate) enum Hook {
    /// `#[multiproc::main]` or `multiproc::init()`: re-run the binary as is.
    Main,
    /// `#[multiproc::test]`: re-run the test binary filtered to this one test.
    Test(String),
}

static MAIN_HOOK: AtomicBool = AtomicBool::new(false);
static TEST_HOOK: Mutex<Option<String>> = Mutex::new(None);
static FINGERPRINT: OnceLock<String> = OnceLock::new();

thread_local! {
    static CURRENT_TEST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Records that this process ran the main hook. A child reached its entry through this same
/// hook, so it may spawn children too.
pub(crate) fn enter_main() {
    MAIN_HOOK.store(true, Ordering::Release);
    remember_self();
}

/// Records that the calling thread runs the test `fn_name` of `module_path` under
/// `#[multiproc::test]`, so that children re-run this test binary filtered to it.
pub(crate) fn enter_test(module_path: &str, fn_name: &str) {
    let name = test_name(module_path, fn_name);
    CURRENT_TEST.with(|t| *t.borrow_mut() = Some(name.clone()));
    TEST_HOOK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(name);
    remember_self();
}

/// libtest names a test by its path below the crate root.
fn test_name(module_path: &str, fn_name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{fn_name}"),
        None => fn_name.to_string(),
    }
}

/// The hook this process ran, if any: the test of the calling thread first, then `main`'s,
/// then any test's (a thread spawned by a test can spawn too).
pub(crate) fn hook() -> Option<Hook> {
    if let Some(name) = CURRENT_TEST.with(|t| t.borrow().clone()) {
        return Some(Hook::Test(name));
    }
    if MAIN_HOOK.load(Ordering::Acquire) {
        return Some(Hook::Main);
    }
    let any = TEST_HOOK.lock().unwrap_or_else(|e| e.into_inner());
    any.clone().map(Hook::Test)
}

/// This build's fingerprint, computed once from the running executable.
pub(crate) fn fingerprint() -> &'static str {
    FINGERPRINT.get_or_init(sys::exe_fingerprint)
}

/// What a parent resolves once, at its hook, before the executable can be replaced.
fn remember_self() {
    fingerprint();
    let _ = current_exe();
}

/// The executable to re-run, resolved once: later `chdir`s or a rebuilt file at the same path
/// do not change which file it is (a rebuilt one is caught by the build fingerprint).
pub(crate) fn current_exe() -> Result<&'static Path> {
    static EXE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // Linux names a replaced executable "path (deleted)": run what is at the path now,
        // and let the fingerprint check say that it is another build.
        Ok(
            match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
                Some(path) => PathBuf::from(path),
                None => exe,
            },
        )
    })
    .as_deref()
    .map_err(|e| Error::other(format!("cannot find the current executable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_paths_below_the_crate_root() {
        assert_eq!(test_name("my_tests::pool", "maps"), "pool::maps");
        assert_eq!(test_name("my_tests", "maps"), "maps");
    }
}
