//! Run Rust code in isolated OS processes: typed actors, typed channels, typed handles.
//!
//! ```no_run
//! use multiproc::{JoinHandle, Process};
//! use serde::{Deserialize, Serialize};
//!
//! // A function target: Python's `Process(target=square, args=(7,))`.
//! #[multiproc::process]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! // A struct with `run`: Python's `Process` subclass.
//! #[derive(Serialize, Deserialize)]
//! struct Printer {
//!     inbox: multiproc::Receiver<String>,
//! }
//!
//! #[multiproc::process]
//! impl Printer {
//!     fn run(self) -> usize {
//!         self.inbox.into_iter().map(|line| println!("{line}")).count()
//!     }
//! }
//!
//! #[multiproc::main]
//! fn main() -> Result<(), multiproc::Error> {
//!     let sq: JoinHandle<u64> = multiproc::spawn(square, (7,))?;
//!     let (tx, rx) = multiproc::channel::<String>()?;
//!     let printer = Printer { inbox: rx }.spawn()?;
//!     tx.send("hello".to_string())?;
//!     drop(tx); // the printer's loop ends once every sender is gone
//!     assert_eq!(printer.join()?, 1);
//!     assert_eq!(sq.join()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! Each spawn re-executes the current binary. The child reaches its entry point through the
//! hook at the top of `main` ([`main`], or [`init`]), looks it up by name in a registry that
//! `#[multiproc::process]` fills, receives its state over a socket inherited from the parent,
//! runs, and sends back its return value or its panic. A killed or crashed child is a typed
//! [`Error`] on [`JoinHandle::join`], never a hang, and children die with their parent.
//!
//! Processes talk through typed mailboxes: [`channel()`] and [`bounded()`] (one receiver),
//! [`Queue`] and [`JoinableQueue`] (many consumers, each item to exactly one), [`pipe()`]
//! (duplex), [`service()`] (request/reply), with [`Select`] to wait on several at once, and
//! [`Bytes`] and [`SharedMemory`] for large payloads.
//!
//! # Feature flags
//!
//! - `tracing`: `tracing` events for spawn, exit, restart and pool dispatch, and
//!   `Builder::forward_tracing` / `PoolBuilder::forward_tracing`.
//! - `log` (implies `tracing`): forwarded children's `log` records come back too, as
//!   `tracing` events (through `tracing-log`).
//! - `cluster`: `multiproc::cluster`, durable queues, pools, services and spawns across
//!   machines on NATS (pulls in the `async-nats` client and a small `tokio` runtime).
//!
//! All are off by default.
//!
//! # Platform support
//!
//! Linux only, for now: the transport uses `SOCK_SEQPACKET` Unix sockets, `memfd`, `eventfd`,
//! `epoll` and futexes, and children are killed by the kernel the moment their parent dies
//! (`PR_SET_PDEATHSIG`; a child also exits as soon as its bootstrap socket to the parent
//! closes). Other systems are not supported.
//!
//! # Testing
//!
//! Under `cargo test`, mark tests that spawn with [`macro@test`] instead of `#[test]`: the child
//! re-runs the test binary filtered to that test, whose hook takes it to the entry point.
//!
//! ```no_run
//! #[multiproc::process]
//! fn double(x: i32) -> i32 {
//!     x * 2
//! }
//!
//! #[multiproc::test]
//! fn doubles_in_a_child() {
//!     assert_eq!(multiproc::spawn(double, (21,)).unwrap().join().unwrap(), 42);
//! }
//! ```
//!
//! # How it works
//!
//! The parent creates a socket pair and re-executes [`std::env::current_exe`]; the child
//! inherits one end (and no other descriptor of the parent) and finds its number, the entry
//! key, the parent's pid and a build fingerprint in the environment (the parent never calls
//! `fork` without `exec`, so a multi-threaded parent is safe). The child's hook checks it is
//! the same build, finds the entry point by key, receives its state, runs it under
//! `catch_unwind`, and sends the outcome. The parent reaps every child, also those whose
//! handle was dropped.
//!
//! Every mailbox is a `SOCK_SEQPACKET` socket pair: one datagram per message, channel ends and
//! memory regions attached as file descriptors, messages over 64 KiB in a memfd. See the
//! book's "Runtime semantics" chapter for ordering, delivery, backpressure and descriptors.
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

// The layers, bottom up: each module uses only those declared before it (ARCHITECTURE.md;
// `tests/tests/layers.rs` checks it).

// The operating system: the only home of libc.
mod sys;

// The error type every layer builds.
mod error;

// The local transport: framing, codec, pump, reactor, shared memory.
mod ipc;

// The public mailboxes, each with its own `impl Selectable`.
mod select;

mod bytes;

/// Typed channels; the iterator types live here, [`channel()`] and its ends at the root.
pub mod channel;

/// Multi-consumer queues; the iterator types live here, [`Queue`] and [`JoinableQueue`] at
/// the root.
pub mod queue;

mod pipe;

mod service;

// Locks and events across processes (documented in the module).
pub mod sync;

mod trace;

// The parent-child contract, the registry of entry points, this process's hook.
mod proto;

mod registry;

mod hook;

mod shutdown;

// The child's side, then the parent's.
mod child;

mod spawn;

// On top.
mod pool;

mod supervisor;

// Across machines, beside the local stack (uses codec, error and the entry points).
#[cfg(feature = "cluster")]
pub mod cluster;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use self::bytes::{Bytes, SharedMemory};
pub use self::channel::{Receiver, Sender, bounded, channel};
pub use self::child::{Current, current, init};
pub use self::error::{Error, ErrorKind, RemotePanic, Result, TrySendError};
pub use self::pipe::{PipeEnd, pipe};
pub use self::pool::{AsyncResult, Imap, ImapUnordered, Pool, PoolBuilder};
pub use self::queue::{JoinableQueue, Queue};
pub use self::select::{Select, Selectable};
pub use self::service::{Client, Request, Server, service};
pub use self::shutdown::{shutdown_on_signals, shutdown_requested};
pub use self::spawn::{Builder, JoinHandle, Process, ProcessFn, Stdio, Zygote, spawn};
pub use self::supervisor::{Report, Restart, Strategy, Supervisor, SupervisorBuilder};

/// Makes a free `fn` or an `impl` block with `fn run(self) -> R` spawnable in its own process.
///
/// On a function, its name becomes spawnable with [`spawn`] (and stays callable); on an `impl`
/// block, the type implements [`Process`], so `value.spawn()` works. Arguments, the struct and
/// the return type must be `Serialize + Deserialize`: checked at compile time.
///
/// Options: `#[process(crate = "path")]` when `multiproc` is renamed or re-exported.
///
/// # Examples
///
/// ```no_run
/// use multiproc::Process;
/// use serde::{Deserialize, Serialize};
///
/// #[multiproc::process]
/// fn add(a: i32, b: i32) -> i32 {
///     a + b
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Job {
///     n: u32,
/// }
///
/// #[multiproc::process]
/// impl Job {
///     fn run(self) -> u32 {
///         self.n + 1
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     assert_eq!(multiproc::spawn(add, (2, 3))?.join()?, 5);
///     assert_eq!(Job { n: 1 }.spawn()?.join()?, 2);
///     Ok(())
/// }
/// ```
#[doc(inline)]
pub use multiproc_macros::process;

/// Puts [`init`] first in `main`, so that children of this binary reach their entry point.
///
/// Works with any `main` signature (`()`, `Result<..>`, `ExitCode`, `async` under an outer
/// runtime attribute). Code placed before the hook would also run in every child.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::main]
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     Ok(())
/// }
/// ```
#[doc(inline)]
pub use multiproc_macros::main;

/// `#[test]` for tests that spawn processes: runs the multiproc hook at the top of the test.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn id(x: u8) -> u8 {
///     x
/// }
///
/// #[multiproc::test]
/// fn round_trip() {
///     assert_eq!(multiproc::spawn(id, (1,)).unwrap().join().unwrap(), 1);
/// }
/// ```
#[doc(inline)]
pub use multiproc_macros::test;
