//! Child side: [`init`] detects the child role from the environment, connects back to the
//! parent, receives the entry's state, runs it and reports its outcome, then exits.
//!
//! The wire protocol (all over ipc-channel):
//! 1. the parent binds an `IpcOneShotServer<Hello>` and re-executes itself with the server's
//!    name, the entry key, its pid and its build fingerprint in the environment;
//! 2. the child connects and sends [`Hello::Ready`] with a fresh, opaque boot sender (or
//!    [`Hello::Refused`] when it cannot run that entry);
//! 3. the parent sends a [`BootHeader`] (the receiving end of a control channel whose
//!    end-of-file tells the child that its parent is gone, and the sending end of the outcome
//!    channel), then the state `T` on the same channel, so that a state that fails to decode
//!    can still be reported;
//! 4. the child runs the entry and sends an [`Outcome`]: the return value or the panic.
//!
//! The parent drops the accepted hello connection once the child is booted: `accept(2)` in
//! ipc-channel does not set close-on-exec, so that one fd must not live on in the parent.

use std::any::type_name;
use std::env;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender, OpaqueIpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::RemotePanic;
use crate::registry::{self, Lookup};
use crate::sys;

pub(crate) const ENV_SERVER: &str = "__MULTIPROC_SERVER";
pub(crate) const ENV_ENTRY: &str = "__MULTIPROC_ENTRY";
pub(crate) const ENV_PARENT: &str = "__MULTIPROC_PARENT";
pub(crate) const ENV_BUILD: &str = "__MULTIPROC_BUILD";
pub(crate) const ENV_STDOUT: &str = "__MULTIPROC_STDOUT";

/// Exit code of a child whose bootstrap failed before it could report to its parent.
pub(crate) const EXIT_BOOTSTRAP: i32 = 109;
/// Exit code of a child that noticed its parent is gone.
pub(crate) const EXIT_ORPHANED: i32 = 110;
/// Exit code of a child whose entry panicked (the panic itself was sent to the parent).
const EXIT_PANICKED: i32 = 101;

/// The child's first message, on the connection it makes to the parent's one-shot server.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    Ready {
        pid: u32,
        state_type: String,
        output_type: String,
        boot: OpaqueIpcSender,
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
    /// Sent by the parent itself to unblock its own accept thread.
    Cancelled,
}

/// How the entry ended.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    Returned(R),
    Panicked(RemotePanic),
    OutputNotSerializable { type_name: String, message: String },
    StateNotDeserializable { type_name: String, message: String },
}

/// What the parent sends once the child is ready, before the state itself.
#[derive(Serialize, Deserialize)]
pub(crate) struct BootHeader<R> {
    pub(crate) control: IpcReceiver<Control>,
    pub(crate) outcome: IpcSender<Outcome<R>>,
}

/// Parent-to-child control messages: none yet (graceful shutdown requests will be one). The
/// channel matters for its end-of-file, which means the parent is gone.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Control {}

/// What a child needs to run its entry; built by [`init`] from the environment.
#[doc(hidden)]
pub struct ChildContext {
    server: String,
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
    let server = env::var(ENV_SERVER).ok()?;
    let parent: u32 = env::var(ENV_PARENT).ok()?.parse().ok()?;
    if sys::parent_pid() != parent {
        if sys::process_exists(parent) {
            // Started by someone else, with our variables inherited: not our child.
            return None;
        }
        // Our parent died before we got here.
        exit_now(EXIT_ORPHANED);
    }
    // Die with the parent (Linux); the control channel covers the other platforms.
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
    Some(ChildContext {
        server,
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

/// Flushes the standard streams and ends the process at once: no atexit handlers, which
/// could block on locks held by threads of the entry point.
pub(crate) fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Tells the parent why this child cannot run, and exits.
fn refuse(ctx: &ChildContext, refusal: Refusal) -> ! {
    if let Ok(hello) = IpcSender::<Hello>::connect(ctx.server.clone()) {
        let _ = hello.send(Hello::Refused(refusal));
    }
    exit_now(EXIT_BOOTSTRAP)
}

/// Runs one entry point in the child: called by the code `#[multiproc::process]` generates.
pub(crate) fn child_main<T, R>(ctx: ChildContext, run: fn(T) -> R) -> !
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let Ok(hello) = IpcSender::<Hello>::connect(ctx.server.clone()) else {
        exit_now(EXIT_BOOTSTRAP)
    };
    let Ok((boot_tx, boot_rx)) = ipc::channel::<BootHeader<R>>() else {
        exit_now(EXIT_BOOTSTRAP)
    };
    let ready = Hello::Ready {
        pid: std::process::id(),
        state_type: type_name::<T>().to_string(),
        output_type: type_name::<R>().to_string(),
        boot: boot_tx.to_opaque(),
    };
    if hello.send(ready).is_err() {
        exit_now(EXIT_BOOTSTRAP)
    }
    drop(hello);
    // The parent is gone or gave up on this child if either receive fails for I/O.
    let Ok(header) = crate::channel::retry_interrupted(|| boot_rx.recv()) else {
        exit_now(EXIT_ORPHANED)
    };
    watch_parent(header.control);
    let outcome = header.outcome;
    let state_rx: IpcReceiver<T> = boot_rx.to_opaque().to();
    let state = match crate::channel::retry_interrupted(|| state_rx.recv()) {
        Ok(state) => state,
        Err(ipc_channel::IpcError::SerializationError(e)) => {
            let _ = outcome.send(Outcome::StateNotDeserializable {
                type_name: type_name::<T>().to_string(),
                message: crate::channel::serde_message(&e),
            });
            exit_now(EXIT_BOOTSTRAP)
        }
        Err(_) => exit_now(EXIT_ORPHANED),
    };
    drop(state_rx);
    crate::panic::install_hook();

    let result = match panic::catch_unwind(AssertUnwindSafe(|| run(state))) {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => Outcome::Panicked(crate::panic::remote_panic(payload)),
    };
    let code = match result {
        Outcome::Panicked(_) => EXIT_PANICKED,
        _ => 0,
    };
    match outcome.send(result) {
        Ok(()) => exit_now(code),
        Err(ipc_channel::IpcError::SerializationError(e)) => {
            let _ = outcome.send(Outcome::OutputNotSerializable {
                type_name: type_name::<R>().to_string(),
                message: crate::channel::serde_message(&e),
            });
            exit_now(EXIT_BOOTSTRAP)
        }
        Err(_) => exit_now(EXIT_ORPHANED),
    }
}

/// Watches the control channel on a small thread: its end-of-file means the parent died.
fn watch_parent(control: IpcReceiver<Control>) {
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent".into())
        .stack_size(64 * 1024)
        .spawn(
            move || match crate::channel::retry_interrupted(|| control.recv()) {
                Ok(message) => match message {},
                Err(_) => exit_now(EXIT_ORPHANED),
            },
        );
    if spawned.is_err() {
        exit_now(EXIT_BOOTSTRAP);
    }
}
