//! Children never outlive their parent: SIGKILL a parent that holds live children (one spawned
//! from a thread that has exited, one with a grandchild) and see none alive one second later.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::PidFd;

#[test]
fn sigkill_parent_leaves_no_child_alive() {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_orphan_parent"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let parent_fd = PidFd::open(parent.id()).unwrap();
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    // Bounded: the helper prints five lines; if it dies, the pipe closes and this ends.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        pids.push(line.strip_prefix("pid ").unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(pids.len(), 4, "helper printed {pids:?}");
    let fds: Vec<PidFd> = pids.iter().map(|&p| PidFd::open(p).unwrap()).collect();
    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(fd.is_alive(), "child {pid} died before its parent");
    }

    parent.kill().unwrap();
    assert!(parent_fd.wait_exit(support::DEADLINE));
    parent.wait().unwrap();

    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(
            fd.wait_exit(Duration::from_secs(1)),
            "process {pid} still alive one second after its parent was killed"
        );
    }
}
