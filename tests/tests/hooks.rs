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
