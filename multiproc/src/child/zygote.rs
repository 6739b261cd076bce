//! The zygote's side of [`Zygote`](crate::Zygote): a child that answers fork requests
//! (`proto::ZygoteRequest`) on its bootstrap socket. It runs on the only thread of its process,
//! so forking it is safe; each forked child leaves the loop into the ordinary child bootstrap.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

use crate::ipc;
use crate::proto::{EXIT_BOOTSTRAP, ForkRequest, ZygoteAnswer, ZygoteRequest};
use crate::sys::{self, Wait, exit_now};

/// Answers fork requests on `sock` until the parent hangs up or says stop. Each child returns
/// from here into [`start_child`].
pub(super) fn serve(sock: &OwnedFd) -> ! {
    let parent = sys::parent_pid();
    loop {
        let Ok(mut frame) = ipc::recv(sock.as_fd(), Wait::Forever) else {
            exit_now(0)
        };
        let fds = std::mem::take(&mut frame.fds);
        let answer = match ipc::decode::<ZygoteRequest>(frame) {
            Ok(ZygoteRequest::Stop) => exit_now(0),
            Ok(ZygoteRequest::Fork(request)) => fork_one(sock.as_raw_fd(), parent, request, fds),
            Err(e) => ZygoteAnswer::Failed(format!("unreadable request: {e}")),
        };
        if ipc::send_value(sock.as_fd(), &answer, Wait::Forever).is_err() {
            exit_now(0)
        }
    }
}

fn fork_one(
    zygote_sock: RawFd,
    parent: u32,
    request: ForkRequest,
    fds: Vec<OwnedFd>,
) -> ZygoteAnswer {
    let wanted = 1 + request.stdio.iter().filter(|s| **s).count();
    if fds.len() != wanted {
        return ZygoteAnswer::Failed(format!(
            "expected {wanted} descriptors with the request, got {}",
            fds.len()
        ));
    }
    // SAFETY: the zygote runs on one thread (checked before it served: see `run_zygote`), so
    // no lock can be held by a thread the child lacks.
    match unsafe { sys::clone_parent() } {
        Ok(None) => start_child(zygote_sock, parent, request, fds),
        Ok(Some(pid)) => ZygoteAnswer::Forked(pid),
        Err(e) => ZygoteAnswer::Failed(e.to_string()),
    }
}

/// In the forked child: takes the standard streams, limits, directory and environment from
/// the request, then runs the ordinary child bootstrap on the socket that came with it.
fn start_child(zygote_sock: RawFd, parent: u32, request: ForkRequest, fds: Vec<OwnedFd>) -> ! {
    // The zygote's socket is not ours to use; closing our copy leaves the zygote's.
    sys::close_raw(zygote_sock);
    let mut fds = fds.into_iter();
    let sock = fds.next().expect("counted by fork_one");
    for (target, wanted) in request.stdio.iter().enumerate() {
        if *wanted {
            let fd = fds.next().expect("counted by fork_one");
            // The original closes on drop.
            if sys::dup_onto(fd.as_raw_fd(), target as RawFd).is_err() {
                exit_now(EXIT_BOOTSTRAP);
            }
        }
    }
    if request.limits.apply().is_err() {
        exit_now(EXIT_BOOTSTRAP);
    }
    if let Some(dir) = request.current_dir
        && std::env::set_current_dir(OsString::from_vec(dir)).is_err()
    {
        exit_now(EXIT_BOOTSTRAP);
    }
    for (key, value) in request.envs {
        let key = OsString::from_vec(key);
        // SAFETY: this process has one thread, so nothing reads the environment meanwhile.
        unsafe {
            match value {
                Some(value) => std::env::set_var(key, OsString::from_vec(value)),
                None => std::env::remove_var(key),
            }
        }
    }
    super::run_forked(sock, parent, request.entry)
}
