//! The one error type of the crate: [`Error`], its [`ErrorKind`], and [`RemotePanic`].

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// `Result<T, multiproc::Error>`.
///
/// # Examples
///
/// ```
/// fn parse(s: &str) -> multiproc::Result<u32> {
///     s.parse().map_err(|_| multiproc::Error::other("not a number"))
/// }
/// assert!(parse("x").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as reported by [`Error::kind`].
///
/// # Examples
///
/// ```
/// use multiproc::ErrorKind;
///
/// let err = multiproc::Error::other("boom");
/// assert_eq!(err.kind(), ErrorKind::Other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The child's entry point panicked; [`Error::remote_panic`] has the message and location.
    Panicked,
    /// The child exited with a status code before it replied; [`Error::exit_code`] has the code.
    Exited,
    /// The child was killed by a signal before it replied; [`Error::signal`] has the number.
    Signaled,
    /// The child hit its memory limit ([`Builder::memory_limit`](crate::Builder::memory_limit)):
    /// an allocation failed and it aborted.
    MemoryLimit,
    /// The child used up its CPU time ([`Builder::cpu_time_limit`](crate::Builder::cpu_time_limit)).
    CpuLimit,
    /// A deadline passed: the child did not start in time, or a receive timed out.
    Timeout,
    /// A non-blocking receive found no message.
    Empty,
    /// A bounded channel or queue is at capacity: a non-blocking send or put returns its value
    /// inside a [`TrySendError`](crate::TrySendError).
    Full,
    /// The queue was closed: nothing more can be put, and everything put before was received.
    Closed,
    /// The child process started but never reached its entry point (the binary's `main` does not
    /// start with `#[multiproc::main]` or `multiproc::init()`).
    NoEntryHook,
    /// `spawn` was called in a process whose `main` (or test) never ran the multiproc hook.
    NotInitialized,
    /// No `#[multiproc::process]` entry point with this name is registered in the binary.
    EntryNotFound,
    /// Parent and child are not the same build of the executable.
    BuildMismatch,
    /// A value could not be serialized to be sent to another process.
    Serialize,
    /// A received value could not be deserialized.
    Deserialize,
    /// The other end of a channel is gone (every sender, or the receiver, was dropped).
    Disconnected,
    /// The handle was already joined.
    AlreadyJoined,
    /// A server of the `cluster` feature (NATS) cannot be reached, or the connection to it
    /// was lost and not restored in time.
    Unreachable,
    /// A server of the `cluster` feature refused the credentials (or their absence).
    AuthRefused,
    /// An operating-system call failed; [`std::error::Error::source`] has the [`io::Error`].
    Io,
    /// Anything else; see the message.
    Other,
}

#[cfg(feature = "cluster")]
impl ErrorKind {
    /// Every kind, for [`ErrorKind::from_name`].
    const ALL: [ErrorKind; 21] = [
        ErrorKind::Panicked,
        ErrorKind::Exited,
        ErrorKind::Signaled,
        ErrorKind::MemoryLimit,
        ErrorKind::CpuLimit,
        ErrorKind::Timeout,
        ErrorKind::Empty,
        ErrorKind::Full,
        ErrorKind::Closed,
        ErrorKind::NoEntryHook,
        ErrorKind::NotInitialized,
        ErrorKind::EntryNotFound,
        ErrorKind::BuildMismatch,
        ErrorKind::Serialize,
        ErrorKind::Deserialize,
        ErrorKind::Disconnected,
        ErrorKind::AlreadyJoined,
        ErrorKind::Unreachable,
        ErrorKind::AuthRefused,
        ErrorKind::Io,
        ErrorKind::Other,
    ];

    /// The kind whose `Debug` name is `name` (how an error crosses machines); `Other` for
    /// a name this build does not know.
    pub(crate) fn from_name(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or(ErrorKind::Other)
    }
}

#[cfg(feature = "cluster")]
impl Error {
    /// An error described on another host.
    pub(crate) fn remote(
        kind: ErrorKind,
        text: String,
        node: String,
        signal: Option<i32>,
        code: Option<i32>,
    ) -> Error {
        Error::new(Repr::Remote {
            kind,
            text,
            node,
            signal,
            code,
        })
    }
}

/// A panic that happened in a child process, carried over to the parent.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn boom() {
///     panic!("no luck");
/// }
///
/// #[multiproc::main]
/// fn main() {
///     let err = multiproc::spawn(boom, ()).unwrap().join().unwrap_err();
///     let panic = err.remote_panic().unwrap();
///     assert_eq!(panic.message(), "no luck");
///     println!("{panic}"); // "no luck" at src/main.rs:3:5
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePanic {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
}

impl RemotePanic {
    /// The panic message, as `panic!` formatted it (`"<non-string payload>"` when the payload
    /// was neither a `&str` nor a `String`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn parse(text: String) -> u32 {
    ///     text.parse().expect("not a number")
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() {
    ///     let err = multiproc::spawn(parse, ("x".to_string(),)).unwrap().join().unwrap_err();
    ///     let message = err.remote_panic().unwrap().message();
    ///     assert!(message.starts_with("not a number: ")); // then the `ParseIntError`
    /// }
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the panic happened, as `file:line:column`, if the panic hook saw it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn boom() {
    ///     panic!("no luck");
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() {
    ///     let err = multiproc::spawn(boom, ()).unwrap().join().unwrap_err();
    ///     let at = err.remote_panic().unwrap().location().unwrap_or("an unknown place");
    ///     eprintln!("the child panicked at {at}"); // src/main.rs:3:5
    /// }
    /// ```
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
}

impl fmt::Display for RemotePanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "'{}' at {loc}", self.message),
            None => write!(f, "'{}'", self.message),
        }
    }
}

/// Which process an error is about, for `Display`.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    pub(crate) name: String,
    pub(crate) pid: Option<u32>,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "child `{}` (pid {pid})", self.name),
            None => write!(f, "child `{}`", self.name),
        }
    }
}

const HOOK_HINT: &str = "start `main` with `#[multiproc::main]`, or call `multiproc::init()` as \
                         its first statement; under `cargo test` use `#[multiproc::test]`";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Repr {
    #[error("{who} panicked: {panic}")]
    Panicked { who: Who, panic: RemotePanic },
    #[error("{who} exited with code {code} before replying")]
    Exited { who: Who, code: i32 },
    #[error("{who} was killed by signal {} before replying", signal_name(*.signal))]
    Signaled { who: Who, signal: i32 },
    #[error(
        "{who} aborted, most likely out of memory: its address space is limited to {} MiB \
         (raise `memory_limit`, or make it use less)",
        .bytes >> 20
    )]
    MemoryLimit { who: Who, bytes: u64 },
    #[error("{who} used up its {seconds} s of CPU time (`cpu_time_limit`) and was stopped")]
    CpuLimit { who: Who, seconds: u64 },
    #[error("{what} timed out after {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    #[error("no message is waiting to be received")]
    Empty,
    #[error("{what}")]
    Full { what: String },
    #[error("{what}")]
    Closed { what: String },
    #[error("{who} exited ({status}) before reaching its entry point: {HOOK_HINT}")]
    NoEntryHook { who: Who, status: String },
    #[error("this process never ran the multiproc hook, so it cannot spawn: {HOOK_HINT}")]
    NotInitialized,
    #[error(
        "no `#[multiproc::process]` entry point named `{key}` is registered in this binary{}",
        known_hint(known)
    )]
    EntryNotFound { key: String, known: Vec<String> },
    #[error("{who} runs a different build of the executable than its parent: {detail}")]
    BuildMismatch { who: Who, detail: String },
    #[error("cannot serialize a value of type `{type_name}`: {message}")]
    Serialize {
        type_name: &'static str,
        message: String,
    },
    #[error("cannot deserialize a value of type `{type_name}`: {message}")]
    Deserialize {
        type_name: &'static str,
        message: String,
    },
    #[error("{what}")]
    Disconnected { what: String },
    #[error("{who} was already joined")]
    AlreadyJoined { who: Who },
    #[cfg(feature = "cluster")]
    #[error("cannot reach the NATS server at {server}: {cause}")]
    Unreachable { server: String, cause: String },
    #[cfg(feature = "cluster")]
    #[error(
        "the NATS server at {server} refused the connection's credentials: {cause} (check \
         the user, password, token, nkey or .creds file given to `Cluster::builder()`)"
    )]
    AuthRefused { server: String, cause: String },
    /// An error that happened on another host (a cluster node), as it was described there.
    #[cfg(feature = "cluster")]
    #[error("{text} (on node {node})")]
    Remote {
        kind: ErrorKind,
        text: String,
        node: String,
        signal: Option<i32>,
        code: Option<i32>,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn known_hint(known: &[String]) -> String {
    if known.is_empty() {
        "; add `#[multiproc::process]` to the function or `impl` block".to_string()
    } else {
        format!(
            "; add `#[multiproc::process]` to it (registered: {})",
            known.join(", ")
        )
    }
}

/// The name of a signal number, e.g. `9 (SIGKILL)` for 9.
pub(crate) fn signal_name(signal: i32) -> String {
    match crate::sys::signal_name(signal) {
        Some(name) => format!("{signal} ({name})"),
        None => format!("{signal}"),
    }
}

/// The error type of every fallible multiproc operation.
///
/// Use [`kind`](Error::kind) to branch on what happened, and the helpers
/// ([`remote_panic`](Error::remote_panic), [`exit_code`](Error::exit_code),
/// [`signal`](Error::signal), ...) for the details. `Display` says what happened in one line;
/// [`source`](std::error::Error::source) returns the underlying I/O error, if any.
///
/// # Examples
///
/// ```no_run
/// use multiproc::ErrorKind;
///
/// #[multiproc::process]
/// fn crash() {
///     std::process::exit(3);
/// }
///
/// #[multiproc::main]
/// fn main() {
///     let err = multiproc::spawn(crash, ()).unwrap().join().unwrap_err();
///     assert_eq!(err.kind(), ErrorKind::Exited);
///     assert_eq!(err.exit_code(), Some(3));
///     eprintln!("{err}"); // child `crash` (pid 4242) exited with code 3 before replying
/// }
/// ```
pub struct Error {
    repr: Box<Repr>,
    /// The last lines the child wrote to stderr, when the parent saw them.
    stderr_tail: Option<Box<[String]>>,
}

impl Error {
    pub(crate) fn new(repr: Repr) -> Self {
        Error {
            repr: Box::new(repr),
            stderr_tail: None,
        }
    }

    /// Attaches the last lines of the child's stderr (shown by `Display` after the message).
    pub(crate) fn with_stderr_tail(mut self, lines: Vec<String>) -> Self {
        if !lines.is_empty() {
            self.stderr_tail = Some(lines.into_boxed_slice());
        }
        self
    }

    /// The last lines the child wrote to its stderr before it failed, when its stderr went
    /// through the parent ([`Stdio::Prefixed`](crate::Stdio::Prefixed)).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::Error::other("x").stderr_tail().is_none());
    /// ```
    pub fn stderr_tail(&self) -> Option<&[String]> {
        self.stderr_tail.as_deref()
    }

    /// The error for a value of type `T` that could not be encoded.
    pub(crate) fn serialize<T: ?Sized>(message: String) -> Self {
        Error::new(Repr::Serialize {
            type_name: std::any::type_name::<T>(),
            message,
        })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::new(Repr::Io {
            context: context.into(),
            source,
        })
    }

    /// An error of kind [`ErrorKind::Other`] with the given message, for code that returns
    /// `multiproc::Result` and has its own failures to report.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::other("the answer was not 42");
    /// assert_eq!(err.to_string(), "the answer was not 42");
    /// ```
    pub fn other(message: impl fmt::Display) -> Self {
        Error::new(Repr::Other(message.to_string()))
    }

    /// What kind of error this is.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::other("x");
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Other);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match &*self.repr {
            Repr::Panicked { .. } => ErrorKind::Panicked,
            Repr::Exited { .. } => ErrorKind::Exited,
            Repr::Signaled { .. } => ErrorKind::Signaled,
            Repr::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            Repr::CpuLimit { .. } => ErrorKind::CpuLimit,
            Repr::Timeout { .. } => ErrorKind::Timeout,
            Repr::Empty => ErrorKind::Empty,
            Repr::Full { .. } => ErrorKind::Full,
            Repr::Closed { .. } => ErrorKind::Closed,
            Repr::NoEntryHook { .. } => ErrorKind::NoEntryHook,
            Repr::NotInitialized => ErrorKind::NotInitialized,
            Repr::EntryNotFound { .. } => ErrorKind::EntryNotFound,
            Repr::BuildMismatch { .. } => ErrorKind::BuildMismatch,
            Repr::Serialize { .. } => ErrorKind::Serialize,
            Repr::Deserialize { .. } => ErrorKind::Deserialize,
            Repr::Disconnected { .. } => ErrorKind::Disconnected,
            Repr::AlreadyJoined { .. } => ErrorKind::AlreadyJoined,
            #[cfg(feature = "cluster")]
            Repr::Unreachable { .. } => ErrorKind::Unreachable,
            #[cfg(feature = "cluster")]
            Repr::AuthRefused { .. } => ErrorKind::AuthRefused,
            #[cfg(feature = "cluster")]
            Repr::Remote { kind, .. } => *kind,
            Repr::Io { .. } => ErrorKind::Io,
            Repr::Other(_) => ErrorKind::Other,
        }
    }

    /// The child's panic, if the error is [`ErrorKind::Panicked`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn inverse(x: i32) -> i32 {
    ///     100 / x
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let err = pool.apply(inverse, (0,)).unwrap_err();
    ///     assert_eq!(err.remote_panic().unwrap().message(), "attempt to divide by zero");
    ///     assert!(multiproc::Error::other("not a panic").remote_panic().is_none());
    ///     Ok(())
    /// }
    /// ```
    pub fn remote_panic(&self) -> Option<&RemotePanic> {
        match &*self.repr {
            Repr::Panicked { panic, .. } => Some(panic),
            _ => None,
        }
    }

    /// The child's exit code, if the error is [`ErrorKind::Exited`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn quit(code: i32) {
    ///     std::process::exit(code);
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let err = pool.apply(quit, (2,)).unwrap_err(); // its worker exited, the pool lives on
    ///     assert_eq!(err.exit_code(), Some(2));
    ///     Ok(())
    /// }
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        match &*self.repr {
            Repr::Exited { code, .. } => Some(*code),
            #[cfg(feature = "cluster")]
            Repr::Remote { code, .. } => *code,
            _ => None,
        }
    }

    /// The signal that killed the child, if the error is [`ErrorKind::Signaled`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn sleeper() {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() {
    ///     let mut child = multiproc::spawn(sleeper, ()).unwrap();
    ///     child.kill().unwrap();
    ///     assert_eq!(child.join().unwrap_err().signal(), Some(libc::SIGKILL));
    /// }
    /// ```
    pub fn signal(&self) -> Option<i32> {
        match &*self.repr {
            Repr::Signaled { signal, .. } => Some(*signal),
            Repr::MemoryLimit { .. } => Some(crate::sys::SIGABRT),
            Repr::CpuLimit { .. } => Some(crate::sys::SIGXCPU),
            #[cfg(feature = "cluster")]
            Repr::Remote { signal, .. } => *signal,
            _ => None,
        }
    }

    /// The pid of the child process this error is about, when there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Error::other("x").pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        match &*self.repr {
            Repr::Panicked { who, .. }
            | Repr::Exited { who, .. }
            | Repr::Signaled { who, .. }
            | Repr::MemoryLimit { who, .. }
            | Repr::CpuLimit { who, .. }
            | Repr::NoEntryHook { who, .. }
            | Repr::BuildMismatch { who, .. }
            | Repr::AlreadyJoined { who } => who.pid,
            _ => None,
        }
    }

    /// `true` for [`ErrorKind::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = multiproc::channel::<u8>().unwrap();
    /// let err = rx.recv_timeout(std::time::Duration::from_millis(1)).unwrap_err();
    /// assert!(err.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// `true` for [`ErrorKind::Disconnected`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u8>().unwrap();
    /// drop(tx);
    /// assert!(rx.recv().unwrap_err().is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.kind() == ErrorKind::Disconnected
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.repr, f)?;
        if let Some(lines) = &self.stderr_tail {
            write!(f, "; the last lines of its stderr:")?;
            for line in lines.iter() {
                write!(f, "\n    | {line}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `fn main() -> Result<(), multiproc::Error>` prints the `Debug` form: make it the
        // readable message, with the kind for programs that log it.
        write!(f, "{} [{:?}]", self.repr, self.kind())?;
        if let Repr::Io { source, .. } = &*self.repr {
            write!(f, ": {source}")?;
        }
        if let Some(lines) = &self.stderr_tail {
            write!(f, "; the last lines of its stderr:")?;
            for line in lines.iter() {
                write!(f, "\n    | {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.repr)
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Error::io("I/O error", source)
    }
}

/// A send or put that did not happen, with the value handed back: the channel or queue was
/// full ([`ErrorKind::Full`]), the wait timed out ([`ErrorKind::Timeout`]), the receiver is
/// gone ([`ErrorKind::Disconnected`]), the queue was closed ([`ErrorKind::Closed`]), or the
/// value could not be encoded ([`ErrorKind::Serialize`]).
///
/// Converts into an [`Error`] with `?` (dropping the value).
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::bounded::<String>(1)?;
/// tx.try_send("first".to_string())?;
/// let full = tx.try_send("second".to_string()).unwrap_err();
/// assert!(full.is_full());
/// assert_eq!(full.into_inner(), "second");
/// # drop(rx);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct TrySendError<T> {
    error: Error,
    value: T,
}

impl<T> TrySendError<T> {
    pub(crate) fn new(error: Error, value: T) -> Self {
        TrySendError { error, value }
    }

    /// What went wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::bounded::<u8>(1)?;
    /// drop(rx);
    /// let e = tx.try_send(1).unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// `true` when the channel or queue was at capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::bounded::<u8>(1)?;
    /// tx.try_send(1)?;
    /// assert!(tx.try_send(2).unwrap_err().is_full());
    /// assert_eq!(rx.recv()?, 1);
    /// tx.try_send(3)?; // room again
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.kind() == ErrorKind::Full
    }

    /// The error, without the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = multiproc::bounded::<u8>(1)?;
    /// tx.send(1)?;
    /// let e = tx.try_send(2).unwrap_err();
    /// assert!(e.error().to_string().contains("full"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<String>::with_maxsize(1)?;
    /// queue.put("first".to_string())?;
    /// let item = queue.try_put("second".to_string()).unwrap_err().into_inner();
    /// assert_eq!(queue.get()?, "first");
    /// queue.put(item)?; // not lost: put again once there is room
    /// assert_eq!(queue.get()?, "second");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Both parts: the error and the value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = multiproc::bounded::<u8>(1)?;
    /// tx.send(1)?;
    /// let (error, value) = tx.try_send(2).unwrap_err().into_parts();
    /// assert!(error.to_string().contains("full"));
    /// assert_eq!(value, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_parts(self) -> (Error, T) {
        (self.error, self.value)
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl<T> From<TrySendError<T>> for Error {
    fn from(e: TrySendError<T>) -> Self {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "9 (SIGKILL)");
        assert_eq!(signal_name(15), "15 (SIGTERM)");
        assert_eq!(signal_name(77), "77");
    }

    #[test]
    fn display_is_one_clause_and_source_not_repeated() {
        let who = Who {
            name: "clock".into(),
            pid: Some(7),
        };
        let e = Error::new(Repr::Signaled {
            who,
            signal: crate::sys::SIGKILL,
        });
        assert_eq!(
            e.to_string(),
            "child `clock` (pid 7) was killed by signal 9 (SIGKILL) before replying"
        );
        let e = Error::io("cannot start child", io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), "cannot start child");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "disk on fire"
        );
    }

    #[test]
    fn panic_display_has_location() {
        let p = RemotePanic {
            message: "boom".into(),
            location: Some("src/main.rs:3:5".into()),
        };
        assert_eq!(p.to_string(), "'boom' at src/main.rs:3:5");
    }
}
