//! Spawning leaks nothing: after 500 spawn/join cycles the parent's open-fd count and zombie
//! count are back where they started. Alone in its binary so that no other test's children
//! or fds blur the counts.

mod support;

#[multiproc::process]
fn add_one(x: u32) -> u32 {
    x + 1
}

#[multiproc::process]
fn panics() {
    panic!("on purpose");
}

#[multiproc::test]
fn spawn_join_500_leaves_fds_and_zombies_flat() {
    // Warm up: the first spawn starts lazily created threads and caches.
    support::join(multiproc::spawn(add_one, (0,)).unwrap()).unwrap();
    let fds_before = support::open_fds();
    let zombies_before = support::zombies();
    for i in 0..500 {
        if i % 50 == 0 {
            // Failures must not leak either.
            let quiet = multiproc::Builder::new()
                .stderr(multiproc::Stdio::Null)
                .spawn_fn(panics, ())
                .unwrap();
            let err = support::join(quiet).unwrap_err();
            assert_eq!(err.kind(), multiproc::ErrorKind::Panicked);
        }
        let handle = multiproc::spawn(add_one, (i,)).unwrap();
        assert_eq!(support::join(handle).unwrap(), i + 1);
    }
    assert_eq!(support::open_fds(), fds_before, "open fds grew");
    assert_eq!(support::zombies(), zombies_before, "zombies left");
    assert!(support::children().is_empty(), "{:?}", support::children());
}
