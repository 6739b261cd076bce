//! Graceful shutdown: a child sees the request and returns; one that ignores it is killed
//! after the grace period; the request reaches grandchildren; SIGTERM to a parent under
//! `shutdown_on_signals` runs the whole sequence.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use multiproc::{ErrorKind, Sender};
use support::{DEADLINE, PidFd, within};

// ANCHOR: cooperative
#[multiproc::process]
fn count_until_asked() -> u32 {
    let mut rounds = 0;
    while !multiproc::shutdown_requested() {
        std::thread::sleep(Duration::from_millis(2));
        rounds += 1;
    }
    rounds
}

#[multiproc::test]
fn a_child_that_checks_the_request_returns_its_result() {
    let handle = multiproc::spawn(count_until_asked, ()).unwrap();
    // Returns the child's own result, well within the grace period.
    let _rounds: u32 = handle.shutdown(DEADLINE).unwrap();
}
// ANCHOR_END: cooperative

#[multiproc::process]
fn ignore_it() {
    std::thread::sleep(Duration::from_secs(600));
}

#[multiproc::test]
fn a_child_that_ignores_the_request_is_killed_after_the_grace_period() {
    let handle = multiproc::spawn(ignore_it, ()).unwrap();
    let e = within(move || handle.shutdown(Duration::from_millis(100)).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Signaled, "{e}");
    assert_eq!(e.signal(), Some(libc::SIGKILL));
}

#[multiproc::process]
fn middle(report: Sender<u32>) -> u32 {
    let grandchild = multiproc::spawn(count_until_asked, ()).unwrap();
    report.send(grandchild.pid()).unwrap();
    // Passed on to the grandchild by the hook's own thread: this one only waits for it.
    grandchild.join().unwrap()
}

#[multiproc::test]
fn the_request_reaches_grandchildren() {
    let (tx, rx) = multiproc::channel::<u32>().unwrap();
    let handle = multiproc::spawn(middle, (tx,)).unwrap();
    let _grandchild = rx.recv_timeout(DEADLINE).unwrap();
    let _rounds: u32 = handle.shutdown(DEADLINE).unwrap();
}

#[test]
fn sigterm_to_the_parent_stops_the_tree_in_order() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graceful_parent"));
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let mut parent = support::KillOnDrop(cmd.spawn().unwrap());
    let parent = &mut parent.0;
    let parent_fd = PidFd::open(parent.id()).unwrap();
    // Its lines, read on a thread, so that every wait below has a deadline.
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = parent.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(DEADLINE)
            .expect("a line from the helper")
    };
    let mut pids = Vec::new();
    loop {
        let line = next();
        if line == "ready" {
            break;
        }
        pids.push(line.strip_prefix("pid ").unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(pids.len(), 4, "helper printed {pids:?}");
    let fds: Vec<PidFd> = pids.iter().map(|&p| PidFd::open(p).unwrap()).collect();

    // SAFETY: kill takes plain integers; the helper is our unreaped child.
    unsafe { libc::kill(parent.id() as libc::pid_t, libc::SIGTERM) };
    assert!(parent_fd.wait_exit(DEADLINE), "the parent did not end");
    let status = parent.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(
            fd.wait_exit(Duration::from_secs(1)),
            "process {pid} outlived the shutdown"
        );
    }
    let mut said: Vec<String> = (0..3).map(|_| next()).collect();
    said.sort();
    assert_eq!(
        said,
        [
            "first stopped cleanly",
            "grandchild stopped cleanly",
            "middle stopped cleanly"
        ]
    );
    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(
            fd.wait_exit(Duration::from_secs(1)),
            "process {pid} outlived the shutdown"
        );
    }
}

#[multiproc::process]
fn deaf_to_sigterm(deaf: Sender<()>) {
    // SAFETY: ignoring a signal touches only this process's dispositions.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    deaf.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[multiproc::test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (tx, rx) = multiproc::channel().unwrap();
    let mut handle = multiproc::spawn(deaf_to_sigterm, (tx,)).unwrap();
    rx.recv_timeout(DEADLINE).unwrap();
    // SIGTERM does nothing to it...
    handle.terminate().unwrap();
    assert_eq!(
        handle.join_timeout(Duration::from_millis(100)).unwrap(),
        None
    );
    // ...the graceful shutdown's kill does.
    let e = within(move || handle.shutdown(Duration::from_millis(100)).unwrap_err());
    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
}

#[multiproc::process]
fn spawn_after_the_request() -> u32 {
    while !multiproc::shutdown_requested() {
        std::thread::sleep(Duration::from_millis(2));
    }
    // Started once this process is already shutting down: asked to stop at once.
    let late = multiproc::spawn(count_until_asked, ()).unwrap();
    late.join().unwrap()
}

#[multiproc::test]
fn a_child_started_during_a_shutdown_is_asked_to_stop_too() {
    let handle = multiproc::spawn(spawn_after_the_request, ()).unwrap();
    let _rounds = within(move || handle.shutdown(DEADLINE).unwrap());
}
