//! A plain `#[test]` (no multiproc hook in this binary) cannot spawn: the error says to use
//! `#[multiproc::test]`, and no process starts.

#[multiproc::process]
fn never_runs() {}

#[test]
fn spawn_without_hook_fails_before_any_process_starts() {
    let err = multiproc::spawn(never_runs, ()).unwrap_err();
    assert_eq!(err.kind(), multiproc::ErrorKind::NotInitialized);
    assert!(err.to_string().contains("#[multiproc::test]"), "{err}");
    assert!(err.pid().is_none());
}
