//! [`Proc`]: a child process of ours, started by exec (a [`std::process::Child`]) or forked by
//! a [`Zygote`](crate::Zygote) on our behalf (a plain pid that we reap with `waitpid`).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus};

/// One child process: its pid, the parent's ends of its piped standard streams, and how to
/// wait for it.
pub(crate) struct Proc {
    pid: u32,
    kind: Kind,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
}

enum Kind {
    Exec(Child),
    /// Forked by a zygote with `CLONE_PARENT`, so it is our child all the same; `status` once
    /// reaped (a reaped pid may be reused, so it is never signalled or waited for again).
    Forked {
        status: Option<ExitStatus>,
    },
}

impl Proc {
    pub(crate) fn exec(mut child: Child) -> Proc {
        Proc {
            pid: child.id(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            kind: Kind::Exec(child),
        }
    }

    pub(crate) fn forked(
        pid: u32,
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> Proc {
        Proc {
            pid,
            kind: Kind::Forked { status: None },
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
        match &mut self.kind {
            Kind::Exec(child) => child.try_wait(),
            Kind::Forked { status } => {
                if status.is_none() {
                    *status = waitpid(self.pid, libc::WNOHANG)?;
                }
                Ok(*status)
            }
        }
    }

    /// Waits for the child to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.kind {
            Kind::Exec(child) => child.wait(),
            Kind::Forked { status } => loop {
                if let Some(status) = *status {
                    return Ok(status);
                }
                *status = waitpid(self.pid, 0)?;
            },
        }
    }

    /// SIGKILL, unless the child is already reaped.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match &mut self.kind {
            Kind::Exec(child) => child.kill(),
            Kind::Forked { status: Some(_) } => Ok(()),
            Kind::Forked { status: None } => crate::sys::send_signal(self.pid, libc::SIGKILL),
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
