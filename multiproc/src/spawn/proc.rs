//! [`Proc`]: a child process of ours, started with `posix_spawn` or forked by a
//! [`Zygote`](crate::Zygote) on our behalf: a pid that we reap with `waitpid`.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus};

use crate::sys;

/// One child process: its pid, the parent's ends of its piped standard streams, and its exit
/// status once reaped (a reaped pid may be reused, so it is never signalled or waited for
/// again).
pub(crate) struct Proc {
    pid: u32,
    status: Option<ExitStatus>,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
}

impl Proc {
    pub(crate) fn forked(
        pid: u32,
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> Proc {
        Proc {
            pid,
            status: None,
            stdin,
            stdout,
            stderr,
        }
    }

    /// A child started with this process's ends of its piped streams (stdin, stdout, stderr).
    pub(crate) fn with_pipes(pid: u32, [stdin, stdout, stderr]: [Option<OwnedFd>; 3]) -> Proc {
        Proc::forked(
            pid,
            stdin.map(Into::into),
            stdout.map(Into::into),
            stderr.map(Into::into),
        )
    }

    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// The exit status if the child has exited (and is now reaped), `None` while it runs.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = sys::waitpid(self.pid, true)?;
        }
        Ok(self.status)
    }

    /// Waits for the child to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            self.status = sys::waitpid(self.pid, false)?;
        }
    }

    /// SIGKILL, unless the child is already reaped.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match self.status {
            Some(_) => Ok(()),
            None => sys::send_signal(self.pid, sys::SIGKILL),
        }
    }
}
