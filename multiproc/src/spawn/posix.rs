//! Starting the child executable with `posix_spawn(3)`: glibc runs it with
//! `clone(CLONE_VM | CLONE_VFORK)`, so the cost does not grow with the parent's memory, where
//! `fork` copies its page tables (30 ms for a 1 GiB parent here, against about 1 ms).
//! `std::process::Command` would fork as soon as a `pre_exec` hook is set, and the hooks
//! multiproc needs are all expressible as file actions: standard streams, the one inherited
//! socket (a `dup2` onto itself clears its close-on-exec flag), the parked stdout of a test
//! child, and the working directory. Resource limits are applied by the child itself, at its
//! hook, before its entry runs.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{Proc, Stdio};

/// What to start, and with which descriptors.
pub(super) struct Spawn {
    pub(super) exe: PathBuf,
    /// The whole argument vector, `argv[0]` first.
    pub(super) argv: Vec<OsString>,
    /// Changes to this process's environment: set, or removed with `None`.
    pub(super) env: Vec<(OsString, Option<OsString>)>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) stdin: Stdio,
    pub(super) stdout: Stdio,
    pub(super) stderr: Stdio,
    /// A descriptor the child inherits, and the number it gets there (a number reserved in
    /// this process, so that no file action can clobber it).
    pub(super) inherit: (RawFd, RawFd),
    /// Where the child's real stdout waits while its stdout is /dev/null (see
    /// `sys::unpark_stdout`).
    pub(super) park_stdout: Option<RawFd>,
}

/// A `posix_spawn_file_actions_t` that is destroyed on drop.
struct Actions(libc::posix_spawn_file_actions_t);

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this value exists.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// A `posix_spawnattr_t` that is destroyed on drop.
struct Attrs(libc::posix_spawnattr_t);

impl Drop for Attrs {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this value exists.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;

/// `posix_spawn_file_actions_addchdir_np`, looked up at run time: a direct reference would
/// keep the binary from loading on a C library without it (glibc before 2.29).
fn addchdir() -> Option<AddChdir> {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FOUND.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a valid C string only looks the name up.
        unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addchdir_np".as_ptr(),
            ) as usize
        }
    });
    // SAFETY: a non-null address of that symbol is that function, with this signature.
    (address != 0).then(|| unsafe { std::mem::transmute::<usize, AddChdir>(address) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} holds a NUL byte and cannot be passed to a child"),
        )
    })
}

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the child; returns it with the parent's ends of its piped streams.
pub(super) fn spawn(s: &Spawn) -> io::Result<Proc> {
    let path = cstring(s.exe.as_os_str())?;
    let argv: Vec<CString> = s
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<_>>()?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in &s.env {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    let null = c"/dev/null";
    // SAFETY: init fills the zeroed struct; the Actions guard destroys it.
    let mut actions = Actions(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    check(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
    let fa = &mut actions.0;

    // The standard streams: the child's ends of pipes, /dev/null, or inherited.
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut theirs: Vec<OwnedFd> = Vec::new();
    for (target, how) in [(0, s.stdin), (1, s.stdout), (2, s.stderr)] {
        let how = match how {
            Stdio::Prefixed if target == 0 => Stdio::Inherit,
            Stdio::Prefixed => Stdio::Piped,
            other => other,
        };
        match how {
            Stdio::Inherit | Stdio::Prefixed => {}
            Stdio::Null => {
                let flags = if target == 0 {
                    libc::O_RDONLY
                } else {
                    libc::O_WRONLY
                };
                // SAFETY: `fa` is initialised; the path is a valid C string that lives
                // until the spawn (glibc copies it).
                check(unsafe {
                    libc::posix_spawn_file_actions_addopen(fa, target, null.as_ptr(), flags, 0)
                })?;
            }
            Stdio::Piped => {
                let (read, write) = pipe()?;
                let (mine, child) = if target == 0 {
                    (write, read)
                } else {
                    (read, write)
                };
                // SAFETY: `fa` is initialised; both numbers are open descriptors.
                check(unsafe {
                    libc::posix_spawn_file_actions_adddup2(fa, child.as_raw_fd(), target)
                })?;
                ours[target as usize] = Some(mine);
                theirs.push(child);
            }
        }
    }
    // The inherited socket, onto its reserved number (a dup2 clears close-on-exec on the copy;
    // onto itself it would only since glibc 2.29).
    // SAFETY: `fa` is initialised; both numbers are open descriptors.
    check(unsafe { libc::posix_spawn_file_actions_adddup2(fa, s.inherit.0, s.inherit.1) })?;
    if let Some(parked) = s.park_stdout {
        // The real stdout (as set up above) waits on `parked`; stdout is /dev/null until the
        // child's hook puts it back.
        // SAFETY: `fa` is initialised; the numbers are valid.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(fa, 1, parked) })?;
        // SAFETY: as above; the path lives until the spawn.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(fa, 1, null.as_ptr(), libc::O_WRONLY, 0)
        })?;
    }
    let cwd = s.cwd.as_ref().map(|d| cstring(d.as_os_str())).transpose()?;
    if let Some(dir) = &cwd {
        let Some(addchdir) = addchdir() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Builder::current_dir needs a C library with \
                 posix_spawn_file_actions_addchdir_np (glibc 2.29 or newer, musl 1.1.24)",
            ));
        };
        // SAFETY: `fa` is initialised; the path lives until the spawn.
        check(unsafe { addchdir(fa, dir.as_ptr()) })?;
    }

    // SAFETY: init fills the zeroed struct; the Attrs guard destroys it.
    let mut attrs = Attrs(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    check(unsafe { libc::posix_spawnattr_init(&mut attrs.0) })?;
    // The child starts with no signal blocked and every signal at its default action (an
    // ignored SIGPIPE, say, would otherwise survive exec).
    // SAFETY: sigemptyset/sigfillset fill the sets they are given; the attrs are initialised.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::posix_spawnattr_setsigmask(&mut attrs.0, &none))?;
        check(libc::posix_spawnattr_setsigdefault(&mut attrs.0, &all))?;
        check(libc::posix_spawnattr_setflags(
            &mut attrs.0,
            (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;
    }

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the path, NULL-terminated argv and envp
    // arrays of C strings that outlive it, and initialised actions and attributes.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attrs.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    })?;
    // The child's ends are the child's now.
    drop(theirs);
    let [stdin, stdout, stderr] = ours;
    Ok(Proc::forked(
        pid as u32,
        stdin.map(Into::into),
        stdout.map(Into::into),
        stderr.map(Into::into),
    ))
}
