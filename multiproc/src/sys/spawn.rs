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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What a child's standard stream is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// This process's own.
    Inherit,
    /// /dev/null.
    Null,
    /// A new pipe, whose other end this process keeps.
    Piped,
}

/// What to start, and with which descriptors.
pub(crate) struct Spawn {
    pub(crate) exe: PathBuf,
    /// The whole argument vector, `argv[0]` first.
    pub(crate) argv: Vec<OsString>,
    /// Changes to this process's environment: set, or removed with `None`.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    /// Stdin, stdout and stderr.
    pub(crate) streams: [Stream; 3],
    /// A descriptor the child inherits, and the number it gets there (a number reserved in
    /// this process, so that no file action can clobber it).
    pub(crate) inherit: (RawFd, RawFd),
    /// Where the child's real stdout waits while its stdout is /dev/null (see
    /// [`unpark_stdout`](super::unpark_stdout)).
    pub(crate) park_stdout: Option<RawFd>,
    /// Close every descriptor from this number on in the child, the inherited socket and
    /// the parked stdout placed below it (see [`CHILD_SOCKET`]): what the parent opened without
    /// close-on-exec does not reach the child. Needs [`can_close_from`].
    pub(crate) close_from: Option<RawFd>,
}

/// Where the child gets its inherited socket when the others are closed ([`Spawn::close_from`]),
/// and its parked stdout just above it.
pub(crate) const CHILD_SOCKET: RawFd = 3;

type AddCloseFrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

/// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34), looked up at run time as
/// [`addchdir`] is.
fn addclosefrom() -> Option<AddCloseFrom> {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FOUND.get_or_init(|| lookup(c"posix_spawn_file_actions_addclosefrom_np"));
    // SAFETY: a non-null address of that symbol is that function, with this signature.
    (address != 0).then(|| unsafe { std::mem::transmute::<usize, AddCloseFrom>(address) })
}

/// Whether a spawn can close the child's other descriptors ([`Spawn::close_from`]): glibc
/// 2.34 or newer.
pub(crate) fn can_close_from() -> bool {
    addclosefrom().is_some()
}

/// A `posix_spawn_file_actions_t` that is destroyed on drop.
struct Actions(libc::posix_spawn_file_actions_t);

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `Actions::new` before this value exists.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// A `posix_spawnattr_t` that is destroyed on drop.
struct Attrs(libc::posix_spawnattr_t);

impl Drop for Attrs {
    fn drop(&mut self) {
        // SAFETY: initialised in `Attrs::new` before this value exists.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;

/// `posix_spawn_file_actions_addchdir_np`, looked up at run time: a direct reference would
/// keep the binary from loading on a C library without it (glibc before 2.29).
fn addchdir() -> Option<AddChdir> {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FOUND.get_or_init(|| lookup(c"posix_spawn_file_actions_addchdir_np"));
    // SAFETY: a non-null address of that symbol is that function, with this signature.
    (address != 0).then(|| unsafe { std::mem::transmute::<usize, AddChdir>(address) })
}

/// The address of the C library's function `name`, or 0 when it has none.
fn lookup(name: &std::ffi::CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT and a valid C string only looks the name up.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// posix_spawn's convention: 0, or the error number itself.
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

/// Starts the child; returns its pid and this process's ends of its piped streams (stdin,
/// stdout, stderr).
pub(crate) fn posix_spawn(s: &Spawn) -> io::Result<(u32, [Option<OwnedFd>; 3])> {
    let path = cstring(s.exe.as_os_str())?;
    let argv = c_strings(s.argv.iter().map(OsString::as_os_str))?;
    let envp = c_strings(environment(&s.env).iter().map(OsString::as_os_str))?;
    let mut actions = Actions::new()?;
    let (ours, theirs) = actions.streams(s.streams)?;
    actions.descriptors(s)?;
    let cwd = s.cwd.as_ref().map(|d| cstring(d.as_os_str())).transpose()?;
    if let Some(dir) = &cwd {
        actions.chdir(dir)?;
    }
    let attrs = Attrs::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the path, NULL-terminated argv and envp
    // arrays of C strings that outlive it, and initialised actions and attributes.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attrs.0,
            argv.pointers().as_ptr(),
            envp.pointers().as_ptr(),
        )
    })?;
    // The child's ends are the child's now.
    drop(theirs);
    Ok((pid as u32, ours))
}

/// This process's environment with `changes` applied, as `KEY=value` strings.
fn environment(changes: &[(OsString, Option<OsString>)]) -> Vec<OsString> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in changes {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    env.into_iter()
        .map(|(mut kv, v)| {
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect()
}

/// C strings and the NULL-terminated array of pointers to them that exec takes.
struct CStrings(Vec<CString>);

fn c_strings<'a>(strings: impl Iterator<Item = &'a OsStr>) -> io::Result<CStrings> {
    strings
        .map(cstring)
        .collect::<io::Result<_>>()
        .map(CStrings)
}

impl CStrings {
    fn pointers(&self) -> Vec<*mut libc::c_char> {
        self.0
            .iter()
            .map(|a| a.as_ptr().cast_mut())
            .chain([std::ptr::null_mut()])
            .collect()
    }
}

impl Actions {
    fn new() -> io::Result<Actions> {
        // SAFETY: init fills the zeroed struct; the Actions guard destroys it.
        let mut actions = Actions(unsafe { std::mem::zeroed() });
        // SAFETY: as above.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
        Ok(actions)
    }

    /// The standard streams: the child's ends of pipes, /dev/null, or inherited. Returns
    /// this process's ends of the pipes, and the child's (to close once it started).
    fn streams(
        &mut self,
        streams: [Stream; 3],
    ) -> io::Result<([Option<OwnedFd>; 3], Vec<OwnedFd>)> {
        let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
        let mut theirs = Vec::new();
        for (target, stream) in streams.into_iter().enumerate() {
            match stream {
                Stream::Inherit => {}
                Stream::Null => {
                    let flags = if target == 0 {
                        libc::O_RDONLY
                    } else {
                        libc::O_WRONLY
                    };
                    self.open_null(target as RawFd, flags)?;
                }
                Stream::Piped => {
                    let (read, write) = super::pipe(false)?;
                    let (mine, child) = if target == 0 {
                        (write, read)
                    } else {
                        (read, write)
                    };
                    self.dup2(child.as_raw_fd(), target as RawFd)?;
                    ours[target] = Some(mine);
                    theirs.push(child);
                }
            }
        }
        Ok((ours, theirs))
    }

    /// The inherited socket onto its reserved number, and the parked stdout.
    fn descriptors(&mut self, s: &Spawn) -> io::Result<()> {
        // A dup2 clears close-on-exec on the copy (onto itself it would only since glibc
        // 2.29).
        self.dup2(s.inherit.0, s.inherit.1)?;
        if let Some(parked) = s.park_stdout {
            // The real stdout (as set up above) waits on `parked`; stdout is /dev/null until
            // the child's hook puts it back.
            self.dup2(1, parked)?;
            self.open_null(1, libc::O_WRONLY)?;
        }
        if let Some(from) = s.close_from {
            let closefrom = addclosefrom().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "posix_spawn_file_actions_addclosefrom_np is missing (glibc before 2.34)",
                )
            })?;
            // SAFETY: the actions are initialised; the call records a number.
            check(unsafe { closefrom(&mut self.0, from) })?;
        }
        Ok(())
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: the actions are initialised; a bad number fails the spawn, not this call.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    fn open_null(&mut self, target: RawFd, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: the actions are initialised; the path is a static C string (glibc copies
        // it anyway).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                target,
                c"/dev/null".as_ptr(),
                flags,
                0,
            )
        })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        let Some(addchdir) = addchdir() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Builder::current_dir needs a C library with \
                 posix_spawn_file_actions_addchdir_np (glibc 2.29 or newer, musl 1.1.24)",
            ));
        };
        // SAFETY: the actions are initialised; the path lives until the spawn.
        check(unsafe { addchdir(&mut self.0, dir.as_ptr()) })
    }
}

impl Attrs {
    /// The child starts with no signal blocked and every signal at its default action (an
    /// ignored SIGPIPE, say, would otherwise survive exec).
    fn new() -> io::Result<Attrs> {
        // SAFETY: init fills the zeroed struct; the Attrs guard destroys it.
        let mut attrs = Attrs(unsafe { std::mem::zeroed() });
        // SAFETY: as above.
        check(unsafe { libc::posix_spawnattr_init(&mut attrs.0) })?;
        // SAFETY: sigemptyset/sigfillset fill the sets they are given; the attrs are
        // initialised.
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
        Ok(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_applies_sets_and_removals() {
        let changes = [
            (
                OsString::from("MULTIPROC_TEST_SET"),
                Some(OsString::from("1")),
            ),
            (OsString::from("PATH"), None),
        ];
        let env = environment(&changes);
        assert!(env.contains(&OsString::from("MULTIPROC_TEST_SET=1")));
        assert!(!env.iter().any(|kv| kv.as_bytes().starts_with(b"PATH=")));
        let c = c_strings(["a", "b"].iter().map(OsStr::new)).unwrap();
        assert_eq!(c.pointers().len(), 3);
        assert!(c.pointers()[2].is_null());
        assert!(cstring(OsStr::new("a\0b")).is_err());
    }
}
