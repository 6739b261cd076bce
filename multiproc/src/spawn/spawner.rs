//! Starts child processes from a thread that lives as long as the process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process
//! (prctl(2); Celery hit this): a child spawned from a short-lived thread would be killed with
//! that thread. So children are forked from the main thread, or else from this one long-lived
//! spawner thread.

use std::io;
use std::sync::Mutex;
use std::sync::mpsc;

use super::Proc;
use crate::sys::{self, Spawn};

/// Starts `spawn` here; see [`sys::posix_spawn`].
fn start(spawn: &Spawn) -> io::Result<Proc> {
    sys::posix_spawn(spawn).map(|(pid, pipes)| Proc::with_pipes(pid, pipes))
}

struct Request {
    spawn: Spawn,
    reply: mpsc::Sender<io::Result<Proc>>,
}

pub(super) fn spawn(spawn: Spawn) -> io::Result<Proc> {
    if sys::is_main_thread() {
        return start(&spawn);
    }
    // Started on first use; a failed start (say, EAGAIN under a thread limit) is retried by
    // the next spawn instead of being remembered.
    static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);
    let spawner = {
        let mut slot = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<Request>();
                std::thread::Builder::new()
                    .name("multiproc-spawner".into())
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        for req in rx {
                            let _ = req.reply.send(start(&req.spawn));
                        }
                    })
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot start the spawner thread: {e}"))
                    })?;
                *slot = Some(tx.clone());
                tx
            }
        }
    };
    let (reply, answer) = mpsc::channel();
    spawner
        .send(Request { spawn, reply })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
