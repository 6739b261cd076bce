//! [`Proc`]: a child process of ours, started with `posix_spawn` or forked by a
//! [`Zygote`](crate::Zygote) on our behalf: a pid that we reap with `waitpid`.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus};

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

    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// The exit status if the child has exited (and is now reaped), `None` while it runs.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = waitpid(self.pid, libc::WNOHANG)?;
        }
        Ok(self.status)
    }

    /// Waits for the child to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            self.status = waitpid(self.pid, 0)?;
        }
    }

    /// SIGKILL, unless the child is already reaped.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match self.status {
            Some(_) => Ok(()),
            None => crate::sys::send_signal(self.pid, libc::SIGKILL),
        }
    }
}

/// `waitpid(pid, flags)`: `None` when `WNOHANG` finds it still running.
fn waitpid(pid: u32, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into `raw`; it touches nothing else.
        let rc = unsafe { libc::waitpid(pid, &mut raw, flags) };
        if rc == pid {
            return Ok(Some(ExitStatus::from_raw(raw)));
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}
