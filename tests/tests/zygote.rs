//! Children forked by a `Zygote`: ours (reaped, signalled, typed exits), with the builder's
//! environment, directory, streams and limits; a dead zygote is replaced, a dropped one is
//! reaped; pools start their workers from one. Every join has a deadline.

mod support;

use std::io::Read;

use multiproc::{Builder, ErrorKind, Pool, Stdio, Zygote};
use support::join;

/// The tests here count this process's children: they must not overlap.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[multiproc::process]
fn parent_and_self() -> (u32, u32) {
    // SAFETY: getppid has no preconditions.
    (unsafe { libc::getppid() } as u32, std::process::id())
}

#[multiproc::process]
fn boom(message: String) {
    panic!("{message}");
}

#[multiproc::process]
fn sleep_forever() {
    loop {
        std::thread::park();
    }
}

#[multiproc::process]
fn report_env(key: String) -> (Option<String>, String) {
    (
        std::env::var(key).ok(),
        std::env::current_dir().unwrap().display().to_string(),
    )
}

#[multiproc::process]
fn shout(line: String) {
    println!("{line}");
    eprintln!("to stderr");
}

#[multiproc::process]
fn allocate(bytes: usize) -> usize {
    let v = vec![1u8; bytes];
    v.iter().map(|b| *b as usize).sum()
}

fn with(zygote: &Zygote) -> Builder {
    Builder::new().zygote(zygote)
}

#[multiproc::test]
fn forked_children_are_ours_and_report_back() {
    let _alone = alone();
    // ANCHOR: zygote
    let zygote = Zygote::start().unwrap();
    let zygote_pid = zygote.pid().unwrap();
    for _ in 0..20 {
        let builder = Builder::new().zygote(&zygote); // fork from the zygote instead of exec
        let child = builder.spawn_fn(parent_and_self, ()).unwrap();
        let pid = child.pid();
        let (parent, own) = join(child).unwrap();
        assert_eq!(
            parent,
            std::process::id(),
            "the child is the caller's, not the zygote's"
        );
        assert_eq!(own, pid);
        assert_ne!(own, zygote_pid);
    }
    // ANCHOR_END: zygote
    // Every child was reaped; only the zygote is left.
    let left: Vec<u32> = support::children().iter().map(|(pid, _)| *pid).collect();
    assert_eq!(left, vec![zygote_pid]);
    drop(zygote);
    assert!(
        support::children().is_empty(),
        "dropping the zygote reaps it"
    );
}

#[multiproc::test]
fn panics_and_signals_are_typed() {
    let _alone = alone();
    let zygote = Zygote::start().unwrap();
    let e = join(
        with(&zygote)
            .spawn_fn(boom, ("forked".to_string(),))
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked);
    assert_eq!(e.remote_panic().unwrap().message(), "forked");

    let mut child = with(&zygote).spawn_fn(sleep_forever, ()).unwrap();
    assert!(child.is_alive());
    child.kill().unwrap();
    let e = join(child).unwrap_err();
    assert_eq!(e.signal(), Some(libc::SIGKILL));
}

#[multiproc::test]
fn builder_settings_reach_the_forked_child() {
    let _alone = alone();
    let zygote = Zygote::start().unwrap();
    let dir = std::env::temp_dir();
    let child = with(&zygote)
        .env("MULTIPROC_ZYGOTE_TEST", "set")
        .current_dir(&dir)
        .spawn_fn(report_env, ("MULTIPROC_ZYGOTE_TEST".to_string(),))
        .unwrap();
    let (value, cwd) = join(child).unwrap();
    assert_eq!(value.as_deref(), Some("set"));
    assert_eq!(
        std::fs::canonicalize(cwd).unwrap(),
        std::fs::canonicalize(&dir).unwrap()
    );

    let mut child = with(&zygote)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Null)
        .spawn_fn(shout, ("piped".to_string(),))
        .unwrap();
    let mut out = String::new();
    child
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    join(child).unwrap();
    assert_eq!(out, "piped\n");

    let e = join(
        with(&zygote)
            .memory_limit(256 << 20)
            .stderr(Stdio::Null)
            .spawn_fn(allocate, (1 << 30,))
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MemoryLimit, "{e}");
    // Under the limit, the same child runs.
    let sum = join(
        with(&zygote)
            .memory_limit(256 << 20)
            .spawn_fn(allocate, (1 << 20,))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sum, 1 << 20);
}

#[multiproc::test]
fn a_killed_zygote_is_replaced() {
    let _alone = alone();
    let zygote = Zygote::start().unwrap();
    let first = zygote.pid().unwrap();
    // SAFETY: kill takes plain integers; `first` is our unreaped child.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let (parent, _) = join(with(&zygote).spawn_fn(parent_and_self, ()).unwrap()).unwrap();
    assert_eq!(parent, std::process::id());
    let second = zygote.pid().unwrap();
    assert_ne!(first, second);
    assert!(!support::exists(first) || support::children().iter().all(|(p, _)| *p != first));
    drop(zygote);
    assert!(support::children().is_empty());
}

/// Regression (issue 13, item 6): a spawn through a zygote that does not answer (stopped
/// here) waited a fixed 10 s whatever the builder's start timeout, then silently started a
/// new zygote. It fails with the builder's timeout now; the next spawn gets a new zygote.
#[multiproc::test]
fn issue13_6_a_hung_zygote_fails_the_spawn_within_its_start_timeout() {
    let _alone = alone();
    let zygote = Zygote::start().unwrap();
    let stuck = zygote.pid().unwrap();
    // SAFETY: kill takes plain integers; `stuck` is our unreaped child.
    assert_eq!(unsafe { libc::kill(stuck as i32, libc::SIGSTOP) }, 0);
    let builder = with(&zygote).start_timeout(std::time::Duration::from_millis(500));
    let e = builder.spawn_fn(parent_and_self, ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("500ms"), "{e}");
    assert!(
        !support::exists(stuck),
        "the hung zygote was killed and reaped"
    );
    let (parent, _) = join(with(&zygote).spawn_fn(parent_and_self, ()).unwrap()).unwrap();
    assert_eq!(parent, std::process::id());
    assert_ne!(zygote.pid(), Some(stuck));
    drop((builder, zygote));
    let left = support::children();
    assert!(left.is_empty(), "{left:?}");
}

#[multiproc::process]
fn twice(x: u64) -> u64 {
    x * 2
}

#[multiproc::process]
fn crash_on(x: u64) -> u64 {
    if x == 3 {
        std::process::abort();
    }
    x
}

#[multiproc::test]
fn pools_start_workers_from_a_zygote() {
    let _alone = alone();
    let pool = Pool::builder().workers(2).zygote(true).build().unwrap();
    let doubled = pool.map(twice, 0..100u64).unwrap();
    assert_eq!(doubled, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    // A worker that dies is replaced from the zygote; only the crashing task fails.
    let results: Vec<_> = pool.imap(crash_on, 0..8u64).unwrap().collect();
    assert!(results[3].is_err());
    for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(*r.as_ref().unwrap(), i as u64);
    }
    pool.close();
    pool.join().unwrap();
    assert!(support::children().is_empty(), "{:?}", support::children());
}

#[test]
fn a_program_with_threads_before_the_hook_gets_no_zygote() {
    // Its process is a child of this one too: not while another test counts them.
    let _alone = alone();
    let out = support::run_bin(env!("CARGO_BIN_EXE_threads_before_init"), |_| {});
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("refused: "), "{}", lines[0]);
    assert!(lines[0].contains("already runs 2 threads"), "{}", lines[0]);
    assert!(lines[0].contains("multiproc::init()"), "{}", lines[0]);
    assert_eq!(lines[1], "plain spawn: Ok(42)");
}
