//! [`Stdio`]: where a child's standard streams go, and how each becomes a descriptor plan
//! for `posix_spawn` or a zygote's fork.

use crate::sys::Stream;

/// Where a child's standard stream goes.
///
/// # Examples
///
/// ```no_run
/// use std::io::Read;
///
/// #[multiproc::process]
/// fn talk() {
///     println!("captured");
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let mut child = multiproc::Builder::new()
///         .stdout(multiproc::Stdio::Piped)
///         .spawn_fn(talk, ())?;
///     let mut out = String::new();
///     child.take_stdout().unwrap().read_to_string(&mut out)?;
///     child.join()?;
///     assert_eq!(out, "captured\n");
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stdio {
    /// Share the parent's stream (the default).
    #[default]
    Inherit,
    /// Discard output; read nothing.
    Null,
    /// A pipe the parent reads or writes through [`JoinHandle::take_stdout`](crate::JoinHandle::take_stdout),
    /// [`JoinHandle::take_stderr`](crate::JoinHandle::take_stderr) or [`JoinHandle::take_stdin`](crate::JoinHandle::take_stdin). Read it while the child
    /// runs: a full pipe blocks the child.
    Piped,
    /// For stdout and stderr: copied to the parent's, line by line, each line prefixed with
    /// the child's name and pid, like `docker compose logs` (`[worker 4242] starting`). For
    /// stderr the parent also keeps the last lines, and the error of a child that crashes
    /// shows them ([`Error::stderr_tail`](crate::Error::stderr_tail)). For stdin: as
    /// `Inherit`.
    Prefixed,
}

impl Stdio {
    /// What the child's stream gets: stdin (`input`) or an output stream. `Prefixed` is a
    /// pipe that the parent copies from for output, and inherited for input.
    pub(super) fn stream(self, input: bool) -> Stream {
        match self {
            Stdio::Inherit => Stream::Inherit,
            Stdio::Prefixed if input => Stream::Inherit,
            Stdio::Null => Stream::Null,
            Stdio::Piped | Stdio::Prefixed => Stream::Piped,
        }
    }

    /// The plans for stdin, stdout and stderr.
    pub(super) fn streams(stdin: Stdio, stdout: Stdio, stderr: Stdio) -> [Stream; 3] {
        [
            stdin.stream(true),
            stdout.stream(false),
            stderr.stream(false),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_is_a_pipe_for_output_and_inherited_for_input() {
        assert_eq!(
            Stdio::streams(Stdio::Prefixed, Stdio::Prefixed, Stdio::Null),
            [Stream::Inherit, Stream::Piped, Stream::Null]
        );
        assert_eq!(Stdio::Piped.stream(true), Stream::Piped);
        assert_eq!(Stdio::default().stream(false), Stream::Inherit);
    }
}
