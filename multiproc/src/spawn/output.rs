//! [`Stdio::Prefixed`](crate::Stdio::Prefixed): a child's output copied to the parent's,
//! line by line, each line prefixed with the child's name and pid (like
//! `docker compose logs`), and the last lines of its stderr kept for its error.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Lines of stderr kept for a failed child's error.
const TAIL_LINES: usize = 10;

/// The last lines of a child's stderr, filled by its copying thread.
#[derive(Clone, Default)]
pub(crate) struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Tail {
    /// The lines, once the copying thread has read to the end of the stream, which comes as
    /// soon as the child is gone (waiting at most 5 s: a grandchild may hold the pipe open).
    pub(crate) fn lines(&self) -> Vec<String> {
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }
}

/// Which of the parent's streams a child's stream is copied to.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Stdout,
    Stderr,
}

/// Copies `stream` to the parent's stdout or stderr on a small thread, each line prefixed;
/// for stderr, keeps the last lines in the returned [`Tail`].
pub(crate) fn copy_prefixed(
    stream: impl Read + Send + 'static,
    prefix: String,
    into: Target,
) -> Tail {
    let tail = Tail::default();
    let (done_tx, done_rx) = mpsc::channel();
    *tail.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(done_rx);
    let lines = Arc::clone(&tail.lines);
    let keep = matches!(into, Target::Stderr);
    let spawned = std::thread::Builder::new()
        .name("multiproc-output".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                let written = match into {
                    Target::Stdout => writeln!(std::io::stdout().lock(), "{prefix}{text}"),
                    Target::Stderr => writeln!(std::io::stderr().lock(), "{prefix}{text}"),
                };
                let _ = written;
                if keep {
                    let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(text.to_string());
                }
            }
            let _ = done_tx.send(());
        });
    if spawned.is_err() {
        // No thread: the child's output is lost rather than blocking it on a full pipe.
        *tail.done.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    tail
}
