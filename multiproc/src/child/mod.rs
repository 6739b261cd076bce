//! The child's side: [`init`] detects the child role from the environment, connects back to
//! the parent, receives the entry's state, runs it and reports its outcome, then exits. The
//! protocol is in `proto`; a zygote's half of it is in [`zygote`].

pub(crate) mod panic;
mod zygote;

use std::any::type_name;
use std::env;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hook::{self, Hook};
use crate::ipc::{self, Frame};
use crate::proto::{
    ChildContext, ENV_BUILD, ENV_ENTRY, ENV_LIMITS, ENV_NAME, ENV_PARENT, ENV_SOCKET, ENV_STDOUT,
    EXIT_BOOTSTRAP, EXIT_ORPHANED, EXIT_PANICKED, Hello, Limits, Outcome, Refusal, ZYGOTE_KEY,
};
use crate::registry::{self, Lookup};
use crate::shutdown;
use crate::sys::{self, Wait, exit_now};

/// Runs the multiproc hook: in a child process, runs the requested entry point and exits;
/// in any other process, returns at once and enables spawning.
///
/// `#[multiproc::main]` inserts this call for you (under `#[tokio::main]`, put
/// `#[multiproc::main]` below it: the hook then runs before the runtime starts). Call it
/// yourself, as the very first statement of `main`, where no attribute can go. Code before
/// it runs in every child too.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn hello() -> String {
///     format!("hello from {}", std::process::id())
/// }
///
/// fn main() {
///     multiproc::init();
///     println!("{}", multiproc::spawn(hello, ()).unwrap().join().unwrap());
/// }
/// ```
pub fn init() {
    hook::enter_main();
    if let Some(ctx) = take_child_role() {
        run_child(ctx);
    }
}

/// What multiproc knows of this process, from [`current`]: Python's `current_process()` and
/// `parent_process()`.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn who() -> (String, Option<u32>) {
///     let me = multiproc::current();
///     (me.name().to_string(), me.parent_pid())
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     assert!(!multiproc::current().is_child());
///     let handle = multiproc::spawn(who, ())?;
///     let name = handle.name().to_string();
///     assert_eq!(handle.join()?, (name, Some(std::process::id())));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Current {
    name: String,
    pid: u32,
    parent: Option<u32>,
}

impl Current {
    /// In a child, the name its parent gave it ([`Builder::name`](crate::Builder::name), else
    /// its entry point's with a number: `clock-1`, `ClockProcess-2`); `"main"` in a process
    /// that multiproc did not start.
    ///
    /// # Examples
    ///
    /// ```
    /// // In a process that multiproc did not start:
    /// assert_eq!(multiproc::current().name(), "main");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's id.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::current().pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pid of the process that started this one through multiproc; `None` in a process
    /// that multiproc did not start.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::current().parent_pid(), None); // multiproc did not start this one
    /// ```
    pub fn parent_pid(&self) -> Option<u32> {
        self.parent
    }

    /// Whether multiproc started this process (it runs an entry point, or is a pool worker).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn in_child() -> bool {
    ///     multiproc::current().is_child()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     assert!(!multiproc::current().is_child());
    ///     assert!(multiproc::spawn(in_child, ())?.join()?);
    ///     Ok(())
    /// }
    /// ```
    pub fn is_child(&self) -> bool {
        self.parent.is_some()
    }
}

/// Set once, at a child's start.
static CURRENT: std::sync::OnceLock<Current> = std::sync::OnceLock::new();

/// This process as multiproc knows it: its name, its parent, whether it is a multiproc child.
///
/// # Examples
///
/// ```
/// let me = multiproc::current();
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.is_child()); // this program's `main` was not started by multiproc
/// ```
pub fn current() -> Current {
    CURRENT.get().cloned().unwrap_or_else(|| Current {
        name: "main".to_string(),
        pid: std::process::id(),
        parent: None,
    })
}

/// Records this child's name (from its parent) and its parent. Not in a zygote: the
/// children it forks record their own.
fn set_current(parent: u32, entry: &str) {
    if entry == ZYGOTE_KEY {
        return;
    }
    let name = env::var(ENV_NAME).unwrap_or_else(|_| registry::last_segment(entry).to_string());
    let _ = CURRENT.set(Current {
        name,
        pid: std::process::id(),
        parent: Some(parent),
    });
}

/// The hook behind `#[multiproc::test]`: like [`init`], and remembers the test's name so that
/// children re-run this test binary filtered to it.
///
/// libtest owns `main`, so the hook runs at the top of the test instead: a child re-runs the
/// test binary filtered to that one test (`<name> --exact`), whose hook dispatches to the
/// entry point before the test body runs. No dummy test, feature flag or `harness = false`
/// is needed.
pub(crate) fn test_hook(module_path: &str, fn_name: &str) {
    hook::enter_test(module_path, fn_name);
    if let Some(ctx) = take_child_role() {
        run_child(ctx);
    }
}

/// The bootstrap details, if this process is a multiproc child. The variables stay in the
/// environment (changing it is unsound once threads run), so a program that a child starts
/// inherits them: it is told apart by its parent, which is not the one they name.
fn take_child_role() -> Option<ChildContext> {
    let sock: i32 = env::var(ENV_SOCKET).ok()?.parse().ok()?;
    let parent: u32 = env::var(ENV_PARENT).ok()?.parse().ok()?;
    if sys::parent_pid() != parent {
        // The child these variables were set for holds the socket they name, inherited
        // across its exec; a program that merely inherited the variables (started by a
        // child, say) does not, and neither does one whose named parent is alive.
        if !sys::is_socket(sock) || sys::process_exists(parent) {
            return None;
        }
        // Our parent died before we got here.
        eprintln!(
            "multiproc: this process was started as a child of pid {parent}, which exited \
             before the child reached its entry point; exiting (code {EXIT_ORPHANED})"
        );
        exit_now(EXIT_ORPHANED);
    }
    // Die with the parent (Linux); the socket's hang-up (see `shutdown::watch_parent`) is the
    // fallback.
    if pdeathsig_wanted() {
        sys::set_parent_death_signal();
        // The parent may have died just before the call: then nobody will signal us.
        if sys::parent_pid() != parent {
            exit_now(EXIT_ORPHANED);
        }
    }
    if let Some(parked) = env::var(ENV_STDOUT).ok().and_then(|s| s.parse().ok()) {
        sys::unpark_stdout(parked);
    }
    // The limits come before anything of the entry runs. One that cannot be set (a hard limit
    // below it) would leave the child unlimited: it does not start.
    if let Ok(value) = env::var(ENV_LIMITS) {
        match Limits::from_env(&value) {
            Some(limits) if limits.apply().is_ok() => {}
            _ => exit_now(EXIT_BOOTSTRAP),
        }
    }
    // Our end of the bootstrap socket, inherited without close-on-exec.
    let Some(sock) = sys::claim_inherited(sock) else {
        exit_now(EXIT_BOOTSTRAP)
    };
    let entry = env::var(ENV_ENTRY).unwrap_or_default();
    set_current(parent, &entry);
    Some(ChildContext {
        sock,
        entry,
        build: env::var(ENV_BUILD).unwrap_or_default(),
    })
}

/// Whether to ask the kernel for the parent-death signal: `MULTIPROC_NO_PDEATHSIG` turns it
/// off, to exercise the socket's hang-up alone.
fn pdeathsig_wanted() -> bool {
    env::var_os("MULTIPROC_NO_PDEATHSIG").is_none()
}

fn run_child(ctx: ChildContext) -> ! {
    if ctx.build != hook::fingerprint() {
        let detail = format!(
            "the parent runs build {}, the child's executable is build {}; \
             was the executable rebuilt while the parent ran?",
            ctx.build,
            hook::fingerprint()
        );
        refuse(&ctx, Refusal::BuildMismatch { detail });
    }
    if ctx.entry == ZYGOTE_KEY {
        run_zygote(ctx);
    }
    match registry::find(&ctx.entry) {
        Ok(entry) => (entry.run)(ctx),
        Err(Lookup::Missing) => {
            let known = registry::similar(&ctx.entry);
            let key = ctx.entry.clone();
            refuse(&ctx, Refusal::EntryNotFound { key, known })
        }
        Err(Lookup::Duplicate(count)) => {
            let key = ctx.entry.clone();
            refuse(&ctx, Refusal::DuplicateEntry { key, count })
        }
    }
}

/// Becomes a zygote: the usual hello and (empty) state, then fork requests until the parent
/// hangs up. No watcher thread: the zygote must stay single-threaded to fork safely.
fn run_zygote(ctx: ChildContext) -> ! {
    // Forking is only safe with no other thread that could hold a lock (malloc's, stdout's)
    // at the fork. Under libtest the test runs on a thread of its own while the main thread
    // waits for it on a channel, holding nothing: that one is allowed.
    let allowed = if matches!(hook::hook(), Some(Hook::Test(_))) {
        2
    } else {
        1
    };
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads > allowed {
        refuse(&ctx, Refusal::Unforkable { threads });
    }
    // The descriptors a request brings must not land on 0, 1 or 2 (a parent started with
    // them closed).
    sys::hold_stdio_numbers();
    if tell(&ctx, &ready::<(), ()>()).is_err() || recv(&ctx).is_err() {
        exit_now(EXIT_ORPHANED)
    }
    zygote::serve(&ctx.sock)
}

/// The bootstrap of a child forked by a zygote for the parent `parent`, on its socket `sock`:
/// as for an exec'd child from here on.
fn run_forked(sock: OwnedFd, parent: u32, entry: String) -> ! {
    // The death signal is not inherited across fork; the zygote's parent is ours too.
    if pdeathsig_wanted() {
        sys::set_parent_death_signal();
    }
    if sys::parent_pid() != parent {
        exit_now(EXIT_ORPHANED);
    }
    set_current(parent, &entry);
    run_child(ChildContext {
        sock,
        entry,
        build: hook::fingerprint().to_string(),
    })
}

/// The hello of a child that runs an entry from `T` to `R`.
fn ready<T, R>() -> Hello {
    Hello::Ready {
        pid: std::process::id(),
        state_type: type_name::<T>().to_string(),
        output_type: type_name::<R>().to_string(),
    }
}

/// Sends one bootstrap message to the parent.
fn tell<M: Serialize>(ctx: &ChildContext, message: &M) -> Result<(), ipc::SendError> {
    ipc::send_value(ctx.sock.as_fd(), message, Wait::Forever)
}

/// Receives one bootstrap message from the parent; an error means it is gone or gave up on
/// this child.
fn recv(ctx: &ChildContext) -> Result<Frame, ipc::WireError> {
    ipc::recv(ctx.sock.as_fd(), Wait::Forever)
}

/// Tells the parent why this child cannot run, and exits.
fn refuse(ctx: &ChildContext, refusal: Refusal) -> ! {
    let _ = tell(ctx, &Hello::Refused(refusal));
    exit_now(EXIT_BOOTSTRAP)
}

/// Runs one entry point in the child: called by the code `#[multiproc::process]` generates.
pub(crate) fn child_main<T, R>(ctx: ChildContext, run: fn(T) -> R) -> !
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    if tell(&ctx, &ready::<T, R>()).is_err() {
        exit_now(EXIT_BOOTSTRAP)
    }
    #[cfg(feature = "tracing")]
    receive_tracing(&ctx);
    let state = receive_state::<T, R>(&ctx);
    watch_parent(&ctx);
    panic::install_hook();
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| run(state))) {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(panic::remote_panic(payload)),
    };
    report(&ctx, outcome)
}

/// The tracing channel the parent sends first when it forwards this child's events.
#[cfg(feature = "tracing")]
fn receive_tracing(ctx: &ChildContext) {
    let Some(level) = env::var(crate::proto::ENV_TRACE)
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    let Ok(frame) = recv(ctx) else {
        exit_now(EXIT_ORPHANED)
    };
    match ipc::decode(frame) {
        Ok(tx) => crate::trace::install_forwarder(tx, level),
        Err(_) => exit_now(EXIT_BOOTSTRAP),
    }
}

/// The entry's state; a state that does not decode is reported, and the child exits.
fn receive_state<T: DeserializeOwned, R: Serialize>(ctx: &ChildContext) -> T {
    let frame = match recv(ctx) {
        Ok(frame) => frame,
        // Something arrived, but not a message of ours: say so, rather than taking it for
        // the parent's death.
        Err(ipc::WireError::Io(e)) => give_up::<R>(
            ctx,
            Outcome::StateNotDeserializable {
                type_name: type_name::<T>().to_string(),
                message: format!("its state arrived in a malformed message: {e}"),
            },
        ),
        Err(_) => exit_now(EXIT_ORPHANED),
    };
    match ipc::decode(frame) {
        Ok(state) => state,
        Err(message) => give_up::<R>(
            ctx,
            Outcome::StateNotDeserializable {
                type_name: type_name::<T>().to_string(),
                message,
            },
        ),
    }
}

/// Watches the bootstrap socket while the entry runs.
fn watch_parent(ctx: &ChildContext) {
    if pdeathsig_wanted() {
        // The kernel kills us with the parent: the socket needs watching only for shutdown
        // requests, which `shutdown_requested` reads when asked, and which a thread takes
        // over once this child has children of its own to pass them on to. A child that
        // never asks saves a thread (a tenth of a fork from a zygote).
        shutdown::watch_lazily(ctx.sock.as_raw_fd());
    } else if !shutdown::watch_parent(ctx.sock.as_raw_fd()) {
        exit_now(EXIT_BOOTSTRAP);
    }
}

/// Sends the entry's outcome and exits: with 0, [`EXIT_PANICKED`] after a panic, or a
/// bootstrap code when the outcome cannot go.
fn report<R: Serialize>(ctx: &ChildContext, outcome: Outcome<R>) -> ! {
    let code = match outcome {
        Outcome::Panicked(_) => EXIT_PANICKED,
        _ => 0,
    };
    match tell(ctx, &outcome) {
        Ok(()) => exit_now(code),
        Err(ipc::SendError::Wire(_)) => exit_now(EXIT_ORPHANED),
        Err(ipc::SendError::Encode(message)) => give_up::<R>(
            ctx,
            Outcome::OutputNotSerializable {
                type_name: type_name::<R>().to_string(),
                message,
            },
        ),
    }
}

/// Tells the parent why the entry's state or result could not cross (an outcome without an
/// `R`), and exits.
fn give_up<R: Serialize>(ctx: &ChildContext, why: Outcome<R>) -> ! {
    let _ = tell(ctx, &why);
    exit_now(EXIT_BOOTSTRAP)
}
