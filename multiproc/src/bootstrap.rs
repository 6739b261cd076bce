//! Child side: [`init`] detects the child role from the environment, connects back to the
//! parent, receives the entry's state, runs it and reports its outcome, then exits.
//!
//! The protocol, over one socket pair per child (see `wire`):
//! 1. the parent creates the pair and re-executes itself; the child inherits one end (the only
//!    descriptor of the parent it inherits), and finds its number, the entry key, the parent's
//!    pid and the build fingerprint in the environment;
//! 2. the child sends [`Hello::Ready`] (or [`Hello::Refused`] when it cannot run that entry);
//! 3. the parent sends the state `T`;
//! 4. the child runs the entry and sends an [`Outcome`]: the return value or the panic.
//!
//! The parent keeps its end open until it has reaped the child: the child takes end-of-file
//! on its end for its parent's death.

use std::any::type_name;
use std::env;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::RemotePanic;
use crate::registry::{self, Lookup};
use crate::sys;
use crate::wire::{self, Wait};

pub(crate) const ENV_SOCKET: &str = "__MULTIPROC_SOCKET";
pub(crate) const ENV_ENTRY: &str = "__MULTIPROC_ENTRY";
pub(crate) const ENV_PARENT: &str = "__MULTIPROC_PARENT";
pub(crate) const ENV_BUILD: &str = "__MULTIPROC_BUILD";
pub(crate) const ENV_STDOUT: &str = "__MULTIPROC_STDOUT";
/// The child's resource limits (see `Limits::to_env`), applied at its hook.
pub(crate) const ENV_LIMITS: &str = "__MULTIPROC_LIMITS";
/// Set (to the parent's most verbose tracing level) when a tracing channel precedes the state.
pub(crate) const ENV_TRACE: &str = "__MULTIPROC_TRACE";

/// Exit code of a child whose bootstrap failed before it could report to its parent.
pub(crate) const EXIT_BOOTSTRAP: i32 = 109;
/// Exit code of a child that noticed its parent is gone.
pub(crate) const EXIT_ORPHANED: i32 = 110;
/// Exit code of a child whose entry panicked (the panic itself was sent to the parent).
const EXIT_PANICKED: i32 = 101;

/// The child's first message.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    Ready {
        pid: u32,
        state_type: String,
        output_type: String,
    },
    Refused(Refusal),
}

/// Why a child could not run the entry it was asked for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Refusal {
    EntryNotFound {
        key: String,
        known: Vec<String>,
    },
    DuplicateEntry {
        key: String,
        count: usize,
    },
    BuildMismatch {
        detail: String,
    },
    /// A zygote that found other threads in its process: forking it could deadlock.
    Unforkable {
        threads: usize,
    },
}

/// How the entry ended.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    Returned(R),
    Panicked(RemotePanic),
    OutputNotSerializable { type_name: String, message: String },
    StateNotDeserializable { type_name: String, message: String },
}

/// What a child needs to run its entry; built by [`init`] from the environment.
#[doc(hidden)]
pub struct ChildContext {
    sock: OwnedFd,
    entry: String,
    build: String,
}

/// Which hook this process ran; children are re-executed so that they reach the same hook.
#[derive(Debug, Clone)]
pub(crate) enum Hook {
    /// `#[multiproc::main]` or `multiproc::init()`: re-run the binary as is.
    Main,
    /// `#[multiproc::test]`: re-run the test binary filtered to this one test.
    Test(String),
}

static MAIN_HOOK: AtomicBool = AtomicBool::new(false);
static TEST_HOOK: Mutex<Option<String>> = Mutex::new(None);
static FINGERPRINT: OnceLock<String> = OnceLock::new();

thread_local! {
    static CURRENT_TEST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs the multiproc hook: in a child process, runs the requested entry point and exits;
/// in any other process, returns at once and enables spawning.
///
/// `#[multiproc::main]` inserts this call for you. Call it yourself, as the very first
/// statement of `main`, where the attribute cannot go (for example under `#[tokio::main]`).
/// Code before it runs in every child too.
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
    // A child reached its entry through this same hook, so it may spawn children too.
    MAIN_HOOK.store(true, Ordering::Release);
    remember_self();
    if let Some(ctx) = take_child_role() {
        run_child(ctx);
    }
}

/// The hook behind `#[multiproc::test]`: like [`init`], and remembers the test's name so that
/// children re-run this test binary filtered to it.
pub(crate) fn test_hook(module_path: &str, fn_name: &str) {
    // libtest names a test by its path below the crate root.
    let name = match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{fn_name}"),
        None => fn_name.to_string(),
    };
    CURRENT_TEST.with(|t| *t.borrow_mut() = Some(name.clone()));
    TEST_HOOK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(name);
    remember_self();
    if let Some(ctx) = take_child_role() {
        run_child(ctx);
    }
}

/// The hook this process ran, if any: the test of the calling thread first, then `main`'s,
/// then any test's (a thread spawned by a test can spawn too).
pub(crate) fn hook() -> Option<Hook> {
    if let Some(name) = CURRENT_TEST.with(|t| t.borrow().clone()) {
        return Some(Hook::Test(name));
    }
    if MAIN_HOOK.load(Ordering::Acquire) {
        return Some(Hook::Main);
    }
    let any = TEST_HOOK.lock().unwrap_or_else(|e| e.into_inner());
    any.clone().map(Hook::Test)
}

/// This build's fingerprint, computed once from the running executable.
pub(crate) fn fingerprint() -> &'static str {
    FINGERPRINT.get_or_init(sys::exe_fingerprint)
}

/// What a parent resolves once, at its hook, before the executable can be replaced.
fn remember_self() {
    fingerprint();
    let _ = crate::spawn::current_exe();
}

/// The bootstrap details, if this process is a multiproc child. The variables stay in the
/// environment (changing it is unsound once threads run), so a program that a child starts
/// inherits them: it is told apart by its parent, which is not the one they name.
fn take_child_role() -> Option<ChildContext> {
    let sock: i32 = env::var(ENV_SOCKET).ok()?.parse().ok()?;
    let parent: u32 = env::var(ENV_PARENT).ok()?.parse().ok()?;
    if sys::parent_pid() != parent {
        if sys::process_exists(parent) {
            // Started by someone else, with our variables inherited: not our child.
            return None;
        }
        // Our parent died before we got here.
        exit_now(EXIT_ORPHANED);
    }
    // Die with the parent (Linux); the socket's hang-up (see `watch_parent`) is the fallback.
    // `MULTIPROC_NO_PDEATHSIG` turns the kernel's help off to exercise the fallback alone.
    if env::var_os("MULTIPROC_NO_PDEATHSIG").is_none() {
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
        match crate::spawn::Limits::from_env(&value) {
            Some(limits) if sys::apply_limits(limits).is_ok() => {}
            _ => exit_now(EXIT_BOOTSTRAP),
        }
    }
    // Our end of the bootstrap socket, inherited without close-on-exec: set it again, so that
    // programs this child starts do not inherit it.
    // SAFETY: fcntl on a plain number; a number that is not open fails with EBADF.
    if sock < 3 || unsafe { libc::fcntl(sock, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        exit_now(EXIT_BOOTSTRAP);
    }
    // SAFETY: the parent handed this descriptor to us alone; nothing else in this process
    // owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    Some(ChildContext {
        sock,
        entry: env::var(ENV_ENTRY).unwrap_or_default(),
        build: env::var(ENV_BUILD).unwrap_or_default(),
    })
}

fn run_child(ctx: ChildContext) -> ! {
    if ctx.build != fingerprint() {
        let detail = format!(
            "the parent runs build {}, the child's executable is build {}; \
             was the executable rebuilt while the parent ran?",
            ctx.build,
            fingerprint()
        );
        refuse(&ctx, Refusal::BuildMismatch { detail });
    }
    if ctx.entry == crate::spawn::ZYGOTE_KEY {
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
    let allowed = if matches!(hook(), Some(Hook::Test(_))) {
        2
    } else {
        1
    };
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads > allowed {
        refuse(&ctx, Refusal::Unforkable { threads });
    }
    // The descriptors a request brings must not land on 0, 1 or 2 (a parent started with
    // them closed): hold those numbers with /dev/null.
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the flags; open returns a new descriptor or -1.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    let ready = Hello::Ready {
        pid: std::process::id(),
        state_type: type_name::<()>().to_string(),
        output_type: type_name::<()>().to_string(),
    };
    if tell(&ctx, &ready).is_err() || wire::recv(ctx.sock.as_fd(), Wait::Forever).is_err() {
        exit_now(EXIT_ORPHANED)
    }
    crate::spawn::serve_zygote(&ctx.sock)
}

/// The bootstrap of a child forked by a zygote for the parent `parent`, on its socket `sock`:
/// as for an exec'd child from here on.
pub(crate) fn run_forked(sock: OwnedFd, parent: u32, entry: String) -> ! {
    // The death signal is not inherited across fork; the zygote's parent is ours too.
    if env::var_os("MULTIPROC_NO_PDEATHSIG").is_none() {
        sys::set_parent_death_signal();
    }
    if sys::parent_pid() != parent {
        exit_now(EXIT_ORPHANED);
    }
    run_child(ChildContext {
        sock,
        entry,
        build: fingerprint().to_string(),
    })
}

/// Flushes the standard streams and ends the process at once: no atexit handlers, which
/// could block on locks held by threads of the entry point.
pub(crate) fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Sends one bootstrap message to the parent.
fn tell<M: Serialize>(ctx: &ChildContext, message: &M) -> std::result::Result<(), ()> {
    match wire::with_encoded(message, |bytes, fds| {
        wire::send(ctx.sock.as_fd(), None, bytes, fds, Wait::Forever)
    }) {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
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
    let ready = Hello::Ready {
        pid: std::process::id(),
        state_type: type_name::<T>().to_string(),
        output_type: type_name::<R>().to_string(),
    };
    if tell(&ctx, &ready).is_err() {
        exit_now(EXIT_BOOTSTRAP)
    }
    #[cfg(feature = "tracing")]
    if let Some(level) = env::var(ENV_TRACE).ok().and_then(|v| v.parse().ok()) {
        let Ok(frame) = wire::recv(ctx.sock.as_fd(), Wait::Forever) else {
            exit_now(EXIT_ORPHANED)
        };
        match wire::decode(frame) {
            Ok(tx) => crate::trace::install_forwarder(tx, level),
            Err(_) => exit_now(EXIT_BOOTSTRAP),
        }
    }
    // The parent is gone or gave up on this child if the receive fails.
    let Ok(frame) = wire::recv(ctx.sock.as_fd(), Wait::Forever) else {
        exit_now(EXIT_ORPHANED)
    };
    let state: T = match wire::decode(frame) {
        Ok(state) => state,
        Err(message) => {
            let _ = tell(
                &ctx,
                &Outcome::<R>::StateNotDeserializable {
                    type_name: type_name::<T>().to_string(),
                    message,
                },
            );
            exit_now(EXIT_BOOTSTRAP)
        }
    };
    if env::var_os("MULTIPROC_NO_PDEATHSIG").is_none() {
        // The kernel kills us with the parent: the socket needs watching only for shutdown
        // requests, which `shutdown_requested` reads when asked, and which a thread takes
        // over once this child has children of its own to pass them on to. A child that
        // never asks saves a thread (a tenth of a fork from a zygote).
        crate::shutdown::watch_lazily(ctx.sock.as_raw_fd());
    } else if !watch_parent(ctx.sock.as_raw_fd()) {
        exit_now(EXIT_BOOTSTRAP);
    }
    crate::panic::install_hook();

    let result = match panic::catch_unwind(AssertUnwindSafe(|| run(state))) {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(crate::panic::remote_panic(payload)),
    };
    let code = match result {
        Outcome::Panicked(_) => EXIT_PANICKED,
        _ => 0,
    };
    match wire::with_encoded(&result, |bytes, fds| {
        wire::send(ctx.sock.as_fd(), None, bytes, fds, Wait::Forever)
    }) {
        Ok(Ok(())) => exit_now(code),
        Ok(Err(_)) => exit_now(EXIT_ORPHANED),
        Err(message) => {
            let _ = tell(
                &ctx,
                &Outcome::<R>::OutputNotSerializable {
                    type_name: type_name::<R>().to_string(),
                    message,
                },
            );
            exit_now(EXIT_BOOTSTRAP)
        }
    }
}

/// Watches the bootstrap socket `fd` on a small thread: shutdown requests, and a hang-up,
/// which means the parent died. The socket lives until the process exits. `false` if the
/// thread could not be started.
pub(crate) fn watch_parent(fd: std::os::fd::RawFd) -> bool {
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // SAFETY: the socket lives in the ChildContext until the process exits, which
            // outlives this thread.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            // Control messages until the parent hangs up.
            while let Ok(frame) = wire::recv(sock, Wait::Forever) {
                match wire::decode::<crate::shutdown::Control>(frame) {
                    Ok(crate::shutdown::Control::Shutdown) => crate::shutdown::requested(),
                    Err(_) => break,
                }
            }
            exit_now(EXIT_ORPHANED)
        });
    spawned.is_ok()
}
