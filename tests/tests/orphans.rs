//! Children never outlive their parent: SIGKILL a parent that holds live children (one spawned
//! from a thread that has exited, one with a grandchild) and see none alive one second later.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::PidFd;

/// SIGKILLs the listed pids on drop (those already gone are skipped by the kernel; pidfds
/// opened above keep the numbers from being reused meanwhile).
struct KillPids(Vec<u32>);

impl Drop for KillPids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

#[test]
fn sigkill_parent_leaves_no_child_alive() {
    sigkill_parent(false);
}

/// Without `PR_SET_PDEATHSIG`, the portable fallback alone (each child watches its control
/// channel from the parent) must do the same.
#[test]
fn control_channel_fallback_alone_leaves_no_child_alive() {
    sigkill_parent(true);
}

fn sigkill_parent(fallback_only: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orphan_parent"));
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    if fallback_only {
        cmd.env("MULTIPROC_NO_PDEATHSIG", "1");
    }
    let mut parent = support::KillOnDrop(cmd.spawn().unwrap());
    let parent = &mut parent.0;
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
    // Whatever happens below, kill what is left.
    let _cleanup = KillPids(pids.clone());
    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(fd.is_alive(), "child {pid} died before its parent");
    }

    parent.kill().unwrap();
    assert!(parent_fd.wait_exit(support::DEADLINE));
    parent.wait().unwrap();

    // The kernel kills the tree at once; the fallback takes one hop per level, so it only
    // has to finish within the test deadline.
    let limit = if fallback_only {
        support::DEADLINE
    } else {
        Duration::from_secs(1)
    };
    for (pid, fd) in pids.iter().zip(&fds) {
        assert!(
            fd.wait_exit(limit),
            "process {pid} still alive {limit:?} after its parent was killed"
        );
    }
}
