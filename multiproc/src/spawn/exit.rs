//! How a child's end reads as an [`Error`]: its exit status, a refusal, a start that failed.

use std::time::{Duration, Instant};

use super::Proc;
use crate::error::{Error, Repr, Who};
use crate::proto::{EXIT_BOOTSTRAP, EXIT_ORPHANED, Refusal};

/// The error for a child that closed its end of the bootstrap socket before it was running:
/// it died (or exec failed to reach the hook); its exit status says how.
pub(super) fn died_starting(child: &mut Proc, who: &Who) -> Error {
    match wait_bounded(child, Duration::from_secs(5)) {
        Some(status) => exit_error(status, who.clone(), false),
        None => Error::other(format!("{who} closed its connection while starting")),
    }
}

/// Waits at most `limit` for a child that is expected to exit on its own.
fn wait_bounded(child: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut step = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(step),
            _ => return None,
        }
        step = (step * 2).min(Duration::from_millis(20));
    }
}

/// Kills and reaps a child that failed to start properly.
pub(super) fn reap(child: &mut Proc) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The error for a child that ended with `status`; `reached_entry` tells whether it got as far
/// as its entry point.
pub(crate) fn exit_error(status: std::process::ExitStatus, who: Who, reached_entry: bool) -> Error {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return Error::new(Repr::Signaled { who, signal });
    }
    let code = status.code().unwrap_or(-1);
    match code {
        EXIT_BOOTSTRAP => Error::other(format!(
            "{who} exited during its start-up (code {code}): it reached the multiproc hook, \
             but its connection to the parent broke"
        )),
        EXIT_ORPHANED => Error::other(format!(
            "{who} exited (code {code}) because it lost its connection to the parent"
        )),
        _ if !reached_entry => Error::new(Repr::NoEntryHook {
            who,
            status: format!("code {code}"),
        }),
        _ => Error::new(Repr::Exited { who, code }),
    }
}

pub(super) fn refusal_error(refusal: Refusal, who: Who) -> Error {
    match refusal {
        Refusal::EntryNotFound { key, known } => Error::new(Repr::EntryNotFound { key, known }),
        Refusal::DuplicateEntry { key, count } => Error::other(format!(
            "{who} found {count} entry points registered as `{key}`"
        )),
        Refusal::BuildMismatch { detail } => Error::new(Repr::BuildMismatch { who, detail }),
        Refusal::Unforkable { threads } => Error::other(format!(
            "{who} cannot serve as a zygote: its process already runs {threads} threads, \
             started by code before `multiproc::init()` (a runtime under `#[tokio::main]`, \
             say), and forking it could deadlock. Call `multiproc::init()` before anything \
             starts threads (a plain `fn main` that calls it, then builds the runtime), or \
             spawn without a zygote"
        )),
    }
}
