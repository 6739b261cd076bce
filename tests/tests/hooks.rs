//! A child that cannot reach its entry point fails fast with an error naming the fix; a child
//! that is another build says so. Never a hang.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn field<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {stdout:?}"))
}

#[test]
fn main_without_hook_cannot_spawn() {
    let out = support::run_bin(env!("CARGO_BIN_EXE_no_hook"), |_| {});
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(field(&out.stdout, "kind="), "NotInitialized");
    let error = field(&out.stdout, "error=");
    assert!(error.contains("#[multiproc::main]"), "{error}");
    assert!(error.contains("multiproc::init()"), "{error}");
}

#[test]
fn child_that_skips_the_hook_is_reported_with_the_fix() {
    let out = support::run_bin(env!("CARGO_BIN_EXE_hook_cases"), |c| {
        c.arg("skip");
    });
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(field(&out.stdout, "kind="), "NoEntryHook");
    let error = field(&out.stdout, "error=");
    assert!(error.contains("before reaching its entry point"), "{error}");
    assert!(error.contains("#[multiproc::main]"), "{error}");
    // The child really ran (and returned from main early).
    assert!(out.stdout.contains("skipped the hook"), "{}", out.stdout);
}

#[test]
fn child_that_hangs_before_the_hook_times_out() {
    let out = support::run_bin(env!("CARGO_BIN_EXE_hook_cases"), |c| {
        c.arg("hang");
    });
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(field(&out.stdout, "kind="), "Timeout");
    assert!(
        field(&out.stdout, "error=").contains("300ms"),
        "{}",
        out.stdout
    );
}

#[test]
fn hook_cases_spawn_normally() {
    let out = support::run_bin(env!("CARGO_BIN_EXE_hook_cases"), |c| {
        c.arg("ok");
    });
    assert_eq!(field(&out.stdout, "ok="), "7", "{}", out.stderr);
}

#[test]
fn rebuilt_executable_is_a_build_mismatch() {
    let dir = std::env::temp_dir().join(format!("multiproc-rebuilt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("app");
    std::fs::copy(env!("CARGO_BIN_EXE_hook_cases"), &exe).unwrap();

    let mut guard = support::KillOnDrop(
        Command::new(&exe)
            .arg("rebuilt")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            .spawn()
            .unwrap(),
    );
    let parent = &mut guard.0;
    let mut stdout = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "waiting\n");

    // "Rebuild": put another multiproc binary at the same path, as cargo does (a new file
    // renamed over the old one).
    let next = dir.join("app.new");
    std::fs::copy(env!("CARGO_BIN_EXE_orphan_parent"), &next).unwrap();
    std::fs::rename(&next, &exe).unwrap();
    parent.stdin.take().unwrap().write_all(b"go\n").unwrap();

    let status = support::wait_within(parent, support::DEADLINE);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success());
    assert_eq!(field(&rest, "kind="), "BuildMismatch", "{rest}");
    assert!(field(&rest, "error=").contains("different build"), "{rest}");
}

/// Regression (issue 13, item 7): a multiproc program started with stale `__MULTIPROC_*`
/// variables that name a dead parent (it inherited them, say from a child that ran it) exited
/// at once with code 110 and nothing on stderr. It runs as a normal program now.
#[test]
fn issue13_7_stale_bootstrap_variables_are_ignored() {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let out = support::run_bin(env!("CARGO_BIN_EXE_hook_cases"), |c| {
        c.arg("ok")
            .env("__MULTIPROC_SOCKET", "3")
            .env("__MULTIPROC_PARENT", dead.to_string())
            .env("__MULTIPROC_ENTRY", "hook_cases::echo")
            .env("__MULTIPROC_BUILD", "stale");
    });
    assert_eq!(
        field(&out.stdout, "ok="),
        "7",
        "exit {:?}, stderr: {}",
        out.status,
        out.stderr
    );
}

/// The other side of item 7: a process that really is a child whose parent died before its
/// hook (it holds the socket the variables name) exits 110, and says why.
#[test]
fn issue13_7_an_orphaned_child_says_why_it_exits() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let raw = theirs.as_raw_fd();
    let out = support::run_bin(env!("CARGO_BIN_EXE_hook_cases"), |c| {
        c.arg("ok")
            .env("__MULTIPROC_SOCKET", "10")
            .env("__MULTIPROC_PARENT", dead.to_string())
            .env("__MULTIPROC_ENTRY", "hook_cases::echo")
            .env("__MULTIPROC_BUILD", "stale");
        // SAFETY: dup2 is async-signal-safe; it gives the child the socket at fd 10, without
        // close-on-exec, as a multiproc parent does.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, 10) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop((ours, theirs));
    assert_eq!(out.status.code(), Some(110), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("a child of pid {dead}, which exited")),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

/// Regression (issue 13, item 8): a child whose state arrived in a malformed message took it
/// for its parent's death ("lost its connection to the parent", exit 110); it reports the
/// malformed message to its parent now (exit 109). This test plays the parent by hand.
#[test]
fn issue13_8_a_corrupted_frame_is_reported_not_taken_for_a_lost_parent() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let exe = env!("CARGO_BIN_EXE_hook_cases");
    let m = std::fs::metadata(exe).unwrap();
    let build = format!(
        "{:x}-{:x}-{:x}-{:x}.{:x}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    );
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors, owned below.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both are new and ours.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Where the state should come, a datagram with an unknown tag.
    let garbage = [9_u8, 1, 2, 3];
    // SAFETY: sends 4 bytes from a live buffer on our socket.
    let sent = unsafe { libc::send(ours.as_raw_fd(), garbage.as_ptr().cast(), 4, 0) };
    assert_eq!(sent, 4);
    let raw = theirs.as_raw_fd();
    let out = support::run_bin(exe, |c| {
        c.arg("ok")
            .env("__MULTIPROC_SOCKET", "10")
            .env("__MULTIPROC_PARENT", std::process::id().to_string())
            .env("__MULTIPROC_ENTRY", "hook_cases::echo")
            .env("__MULTIPROC_BUILD", &build);
        // SAFETY: dup2 is async-signal-safe; it gives the child the socket at fd 10, without
        // close-on-exec, as a multiproc parent does.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, 10) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop(theirs);
    assert_eq!(out.status.code(), Some(109), "{}", out.stderr);
    // Its hello, then what it says of the state.
    let mut said = Vec::new();
    loop {
        let mut buf = [0_u8; 4096];
        // SAFETY: receives into a live buffer; the peer is gone, so this never blocks.
        let n = unsafe { libc::recv(ours.as_raw_fd(), buf.as_mut_ptr().cast(), 4096, 0) };
        if n <= 0 {
            break;
        }
        said.extend_from_slice(&buf[..n as usize]);
    }
    let said = String::from_utf8_lossy(&said);
    assert!(said.contains("malformed message"), "{said}");
}
