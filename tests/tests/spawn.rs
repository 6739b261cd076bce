//! Spawning from inside libtest with `#[multiproc::test]`: both forms of `#[process]`, every
//! `JoinHandle` method, `Builder` options, channels crossing processes, and the typed errors.
//! Every join has a deadline (`support::join`); no test sleeps to synchronise.

mod support;

use std::io::Read;
use std::time::Duration;

use multiproc::{Builder, ErrorKind, Process, Receiver, Sender, Stdio};
use serde::{Deserialize, Serialize};
use support::join;

#[multiproc::process]
fn zero() -> String {
    "zero".to_string()
}

// ANCHOR: testing
#[multiproc::process]
fn one(a: u8) -> u8 {
    a + 1
}

#[multiproc::test]
fn spawns_from_a_test() {
    let child = multiproc::spawn(one, (1,)).unwrap();
    assert_eq!(support::join(child).unwrap(), 2);
}
// ANCHOR_END: testing

#[multiproc::process]
#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: String, g: Vec<u8>, h: (bool, char)) -> String {
    format!("{a} {b} {c} {d} {e} {f} {g:?} {h:?}")
}

#[multiproc::test]
fn fn_form_takes_zero_to_eight_arguments() {
    assert_eq!(join(multiproc::spawn(zero, ()).unwrap()).unwrap(), "zero");
    assert_eq!(join(multiproc::spawn(one, (41,)).unwrap()).unwrap(), 42);
    let s = join(
        multiproc::spawn(
            eight,
            (1, 2, 3, 4, -5, "six".to_string(), vec![7], (true, '8')),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(s, "1 2 3 4 -5 six [7] (true, '8')");
}

#[multiproc::test]
fn annotated_fn_is_still_callable() {
    assert_eq!(one(1), 2);
    assert_eq!(
        eight(0, 0, 0, 0, 0, String::new(), vec![], (false, 'x')),
        "0 0 0 0 0  [] (false, 'x')"
    );
}

#[derive(Serialize, Deserialize)]
struct Counter {
    from: u32,
    to: u32,
}

#[multiproc::process]
impl Counter {
    fn run(self) -> Vec<u32> {
        (self.from..self.to).collect()
    }

    /// Other methods in the block stay as they are.
    #[allow(dead_code)]
    fn len(&self) -> u32 {
        self.to - self.from
    }
}

#[multiproc::test]
fn struct_form_runs_in_another_process() {
    let handle = Counter { from: 3, to: 6 }.spawn().unwrap();
    assert_ne!(handle.pid(), std::process::id());
    assert!(handle.name().starts_with("Counter-"), "{}", handle.name());
    assert_eq!(join(handle).unwrap(), [3, 4, 5]);
}

/// What a child knows of itself (Python's `current_process()` and `parent_process()`).
#[multiproc::process]
fn identity() -> multiproc::Current {
    multiproc::current()
}

/// Unique default names, as Python's `Process-1`, `Process-2`, by entry point, and
/// `multiproc::current()` in the child: its name, its parent, that it is a child; through a
/// zygote too.
#[multiproc::test]
fn children_have_unique_names_and_know_them_and_their_parent() {
    let me = multiproc::current();
    assert!(!me.is_child());
    assert_eq!((me.name(), me.parent_pid()), ("main", None));
    let zygote = multiproc::Zygote::start().unwrap();
    let forked = multiproc::Builder::new().zygote(&zygote);
    let handles = vec![
        multiproc::spawn(identity, ()).unwrap(),
        multiproc::spawn(identity, ()).unwrap(),
        forked.spawn_fn(identity, ()).unwrap(),
        multiproc::Builder::new()
            .name("chosen")
            .spawn_fn(identity, ())
            .unwrap(),
    ];
    let names: Vec<String> = handles.iter().map(|h| h.name().to_string()).collect();
    assert_eq!(names[..3], ["identity-1", "identity-2", "identity-3"]);
    assert_eq!(names[3], "chosen");
    for (handle, name) in handles.into_iter().zip(names) {
        let pid = handle.pid();
        let child = join(handle).unwrap();
        assert_eq!(child.name(), name);
        assert_eq!(child.parent_pid(), Some(std::process::id()));
        assert!(child.is_child());
        assert_eq!(child.pid(), pid);
    }
}

#[multiproc::process]
fn whoami() -> (u32, u32) {
    (std::process::id(), multiproc_tests_parent())
}

fn multiproc_tests_parent() -> u32 {
    std::os::unix::process::parent_id()
}

#[multiproc::test]
fn child_is_a_separate_process_of_ours() {
    let handle = multiproc::spawn(whoami, ()).unwrap();
    let pid = handle.pid();
    let (child, parent) = join(handle).unwrap();
    assert_eq!(child, pid);
    assert_eq!(parent, std::process::id());
}

#[multiproc::process]
fn fails_with(code: i32) {
    std::process::exit(code);
}

#[multiproc::test]
fn exit_before_reply_is_an_error_with_the_code() {
    let err = join(multiproc::spawn(fails_with, (3,)).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exited);
    assert_eq!(err.exit_code(), Some(3));
    let text = err.to_string();
    assert!(
        text.contains("fails_with") && text.contains("code 3"),
        "{text}"
    );
}

#[multiproc::process]
fn panics(message: String) -> u8 {
    panic!("{message}");
}

#[multiproc::test]
fn panic_carries_message_and_location() {
    let err = join(multiproc::spawn(panics, ("deliberate".into(),)).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let panic = err.remote_panic().unwrap();
    assert_eq!(panic.message(), "deliberate");
    let location = panic.location().unwrap();
    assert!(location.starts_with("tests/tests/spawn.rs:"), "{location}");
    assert!(err.to_string().contains(location));
}

#[multiproc::process]
fn sleep_for(d: Duration) {
    std::thread::sleep(d);
}

#[multiproc::test]
fn kill_is_reported_as_sigkill() {
    let mut handle = multiproc::spawn(sleep_for, (Duration::from_secs(600),)).unwrap();
    assert!(handle.is_alive());
    handle.kill().unwrap();
    let err = join(handle).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Signaled);
    assert_eq!(err.signal(), Some(libc::SIGKILL));
    assert!(err.to_string().contains("SIGKILL"), "{err}");
}

#[multiproc::test]
fn terminate_sends_sigterm() {
    let mut handle = multiproc::spawn(sleep_for, (Duration::from_secs(600),)).unwrap();
    handle.terminate().unwrap();
    let err = join(handle).unwrap_err();
    assert_eq!(err.signal(), Some(libc::SIGTERM));
}

#[multiproc::test]
fn join_timeout_keeps_the_handle_usable() {
    let (tx, rx) = multiproc::channel::<()>().unwrap();
    // The child waits for our go, so the first timeout is certain without a sleep.
    let mut handle = multiproc::spawn(wait_for_go, (rx,)).unwrap();
    assert!(
        handle
            .join_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    assert!(handle.is_alive());
    tx.send(()).unwrap();
    assert_eq!(handle.join_timeout(support::DEADLINE).unwrap(), Some(7));
    assert!(!handle.is_alive());
    let again = handle.join_timeout(Duration::from_millis(1)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyJoined);
}

#[multiproc::process]
fn wait_for_go(go: Receiver<()>) -> u8 {
    go.recv().unwrap();
    7
}

// ANCHOR: builder
#[multiproc::process]
fn env_and_dir(key: String) -> (Option<String>, String) {
    let dir = std::env::current_dir().unwrap().display().to_string();
    (std::env::var(key).ok(), dir)
}

#[multiproc::test]
fn builder_sets_name_env_and_dir() {
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let handle = Builder::new()
        .name("configured")
        .env("MULTIPROC_TEST_VALUE", "forty-two")
        .current_dir(&dir)
        .spawn_fn(env_and_dir, ("MULTIPROC_TEST_VALUE".into(),))
        .unwrap();
    assert_eq!(handle.name(), "configured");
    let (value, cwd) = join(handle).unwrap();
    assert_eq!(value.as_deref(), Some("forty-two"));
    assert_eq!(cwd, dir.display().to_string());
}
// ANCHOR_END: builder

#[multiproc::process]
fn run_program(path: String, arg: String) -> (bool, String) {
    let out = std::process::Command::new(path)
        .arg(arg)
        .output()
        .expect("start the program");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

#[multiproc::test]
fn a_program_started_by_a_child_is_not_taken_for_a_child() {
    // The bootstrap variables stay in the child's environment, so `hook_cases` inherits them:
    // it must see that its parent is not the one they name, and run as a normal program.
    let handle = multiproc::spawn(
        run_program,
        (env!("CARGO_BIN_EXE_hook_cases").into(), "ok".into()),
    )
    .unwrap();
    let (success, stdout) = join(handle).unwrap();
    assert!(success, "{stdout}");
    assert!(stdout.contains("ok=7"), "{stdout}");
}

// ANCHOR: piped
#[multiproc::process]
fn shout(words: Vec<String>) {
    for w in words {
        println!("{}", w.to_uppercase());
    }
    eprintln!("done");
}

#[multiproc::test]
fn stdout_and_stderr_can_be_captured() {
    let mut handle = Builder::new()
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped)
        .spawn_fn(shout, (vec!["a".into(), "b".into()],))
        .unwrap();
    let mut out = String::new();
    let mut err = String::new();
    handle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    handle
        .take_stderr()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    join(handle).unwrap();
    assert_eq!(out, "A\nB\n");
    assert_eq!(err, "done\n");
}
// ANCHOR_END: piped

/// A worker that receives its inbox as an argument and replies on a channel that arrives
/// inside each message: request/reply without shared state.
#[derive(Serialize, Deserialize)]
struct Request {
    n: u64,
    reply: Sender<u64>,
}

#[multiproc::process]
fn squarer(inbox: Receiver<Request>) -> usize {
    let mut served = 0;
    for req in inbox {
        req.reply.send(req.n * req.n).unwrap();
        served += 1;
    }
    served
}

#[multiproc::test]
fn channels_travel_as_arguments_and_inside_messages() {
    let (tx, rx) = multiproc::channel::<Request>().unwrap();
    let worker = multiproc::spawn(squarer, (rx,)).unwrap();
    for n in 1..=5 {
        let (reply, answer) = multiproc::channel().unwrap();
        tx.send(Request { n, reply }).unwrap();
        assert_eq!(answer.recv_timeout(support::DEADLINE).unwrap(), n * n);
    }
    drop(tx);
    assert_eq!(join(worker).unwrap(), 5);
}

#[derive(Serialize, Deserialize)]
struct Producer {
    id: u32,
    out: Sender<(u32, u32)>,
}

#[multiproc::process]
impl Producer {
    fn run(self) {
        for i in 0..100 {
            self.out.send((self.id, i)).unwrap();
        }
    }
}

#[multiproc::test]
fn many_producers_one_consumer_fifo_per_sender() {
    let (tx, rx) = multiproc::channel().unwrap();
    let producers: Vec<_> = (0..3)
        .map(|id| {
            Producer {
                id,
                out: tx.clone(),
            }
            .spawn()
            .unwrap()
        })
        .collect();
    drop(tx);
    let received: Vec<(u32, u32)> = rx.into_iter().collect();
    for p in producers {
        join(p).unwrap();
    }
    assert_eq!(received.len(), 300);
    for id in 0..3 {
        let mine: Vec<u32> = received
            .iter()
            .filter(|(p, _)| *p == id)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(
            mine,
            (0..100).collect::<Vec<_>>(),
            "producer {id} out of order"
        );
    }
}

#[multiproc::process]
fn spawn_grandchild(x: u8) -> u8 {
    join(multiproc::spawn(one, (x,)).unwrap()).unwrap() + 1
}

#[multiproc::test]
fn children_can_spawn_children() {
    assert_eq!(
        join(multiproc::spawn(spawn_grandchild, (1,)).unwrap()).unwrap(),
        3
    );
}

#[multiproc::test]
fn spawn_from_a_short_lived_thread_survives_the_thread() {
    // PR_SET_PDEATHSIG fires when the spawning *thread* exits; spawning goes through a
    // long-lived thread so the child outlives this one.
    let (tx, rx) = multiproc::channel::<()>().unwrap();
    let handle = std::thread::spawn(move || multiproc::spawn(wait_for_go, (rx,)).unwrap())
        .join()
        .unwrap();
    tx.send(()).unwrap();
    assert_eq!(join(handle).unwrap(), 7);
}

#[multiproc::test]
fn dropped_handle_is_reaped() {
    let (tx, rx) = multiproc::channel::<()>().unwrap();
    let handle = multiproc::spawn(wait_for_go, (rx,)).unwrap();
    let pidfd = support::PidFd::open(handle.pid()).unwrap();
    let pid = handle.pid();
    drop(handle);
    // Detached, not killed: it still waits for us.
    assert!(pidfd.is_alive());
    tx.send(()).unwrap();
    assert!(pidfd.wait_exit(support::DEADLINE));
    // Once exited, the reaper thread collects it: no zombie is left. The reaper needs a
    // moment after the exit, so wait (bounded) on the zombie's disappearance.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while support::children().iter().any(|(p, _)| *p == pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "zombie {pid} never reaped"
        );
        std::thread::yield_now();
    }
}

#[multiproc::process]
fn unserializable_output() -> Opaque {
    Opaque(1)
}

/// Serializes fine at compile time, fails at run time: a custom impl that refuses.
#[derive(Debug)]
struct Opaque(#[allow(dead_code)] u8); // read only through Debug

impl Serialize for Opaque {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Opaque refuses to be serialized"))
    }
}

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(Opaque)
    }
}

#[multiproc::test]
fn output_that_fails_to_serialize_names_the_type() {
    let err = join(multiproc::spawn(unserializable_output, ()).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Serialize);
    assert!(err.to_string().contains("Opaque"), "{err}");
}

#[multiproc::process]
fn takes_opaque(_o: Opaque) {}

#[multiproc::test]
fn argument_that_fails_to_serialize_names_the_type() {
    let err = multiproc::spawn(takes_opaque, (Opaque(1),)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Serialize);
    assert!(err.to_string().contains("Opaque"), "{err}");
}

#[test]
fn channels_work_in_one_process_too() {
    let (tx, rx) = multiproc::channel::<String>().unwrap();
    tx.send("x".into()).unwrap();
    assert_eq!(rx.try_recv().unwrap(), "x");
    assert_eq!(rx.try_recv().unwrap_err().kind(), ErrorKind::Empty);
    drop(tx);
    assert!(rx.recv().unwrap_err().is_disconnected());
}

#[test]
fn send_to_a_dropped_receiver_is_disconnected() {
    let (tx, rx) = multiproc::channel::<u8>().unwrap();
    drop(rx);
    let err = tx.send(1).unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert!(err.to_string().contains("receiver is gone"), "{err}");
}

/// Serializes, but refuses to deserialize: the child cannot decode it.
#[derive(Debug)]
struct Picky;

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("Picky refuses to be deserialized"))
    }
}

#[multiproc::process]
fn takes_picky(_p: Picky) {}

#[multiproc::test]
fn state_that_fails_to_deserialize_in_the_child_names_the_type() {
    let handle = multiproc::spawn(takes_picky, (Picky,)).unwrap();
    let err = join(handle).unwrap_err();
    let text = err.to_string();
    // postcard reports custom errors without their text, so the type is the clue.
    assert!(text.contains("could not decode its state"), "{text}");
    assert!(text.contains("Picky"), "{text}");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Countdown(u8);

#[multiproc::process]
impl Countdown {
    /// `Self` in the return type means the struct.
    fn run(self) -> Option<Self> {
        self.0.checked_sub(1).map(Countdown)
    }
}

#[multiproc::test]
fn run_may_return_self() {
    assert_eq!(
        join(Countdown(3).spawn().unwrap()).unwrap(),
        Some(Countdown(2))
    );
    assert_eq!(join(Countdown(0).spawn().unwrap()).unwrap(), None);
}

fn not_annotated(x: u32) -> u32 {
    x
}

#[multiproc::test]
fn a_fn_without_the_attribute_is_rejected_before_any_process_starts() {
    let err = multiproc::spawn(not_annotated, (1,)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EntryNotFound);
    let text = err.to_string();
    assert!(text.contains("not_annotated"), "{text}");
    assert!(text.contains("add `#[multiproc::process]`"), "{text}");
    assert!(err.pid().is_none());
}

#[multiproc::test]
fn closures_and_fn_pointers_are_rejected_with_the_reason() {
    let err = multiproc::spawn(|x: u32| x + 1, (1,)).unwrap_err();
    assert!(err.to_string().contains("is a closure"), "{err}");
    let pointer: fn(u8) -> u8 = one;
    let err = multiproc::spawn(pointer, (1,)).unwrap_err();
    assert!(err.to_string().contains("function pointer"), "{err}");
}

#[multiproc::test]
fn a_process_fn_declared_inside_a_function_body_spawns() {
    #[multiproc::process]
    fn nested(x: u32) -> u32 {
        x * 3
    }
    assert_eq!(join(multiproc::spawn(nested, (5,)).unwrap()).unwrap(), 15);
}

mod inner {
    #[multiproc::process]
    pub(crate) fn in_a_module(s: String) -> usize {
        s.len()
    }
}

#[multiproc::test]
fn a_process_fn_in_a_module_spawns_by_path() {
    let handle = multiproc::spawn(inner::in_a_module, ("four".to_string(),)).unwrap();
    assert_eq!(join(handle).unwrap(), 4);
}

mod lookalike {
    /// Same name and arguments as the `#[process]` fn `one` above, but not marked.
    pub(crate) fn one(a: u8) -> u8 {
        a
    }
}

#[multiproc::test]
fn an_unmarked_fn_never_resolves_to_a_marked_namesake() {
    let err = multiproc::spawn(lookalike::one, (1,)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EntryNotFound, "{err}");
    assert!(err.to_string().contains("lookalike::one"), "{err}");
}

#[multiproc::test]
fn nested_fns_of_one_name_in_two_bodies_each_run_their_own_code() {
    fn first() -> u8 {
        #[multiproc::process]
        fn same() -> u8 {
            1
        }
        join(multiproc::spawn(same, ()).unwrap()).unwrap()
    }
    fn second() -> u8 {
        #[multiproc::process]
        fn same() -> u8 {
            2
        }
        join(multiproc::spawn(same, ()).unwrap()).unwrap()
    }
    assert_eq!((first(), second()), (1, 2));
}

#[multiproc::process]
fn wait_for(go: multiproc::Receiver<u8>) -> u8 {
    go.recv().unwrap()
}

/// `is_finished(&self)`, as std's: false while the child runs, true once it has ended, and
/// `join` then returns at once.
#[multiproc::test]
fn is_finished_tells_a_running_child_from_an_ended_one() {
    let (tx, rx) = multiproc::channel::<u8>().unwrap();
    let child = multiproc::spawn(wait_for, (rx,)).unwrap();
    assert!(!child.is_finished());
    let exited = support::PidFd::open(child.pid()).unwrap();
    tx.send(9).unwrap();
    assert!(exited.wait_exit(support::DEADLINE), "the child did not end");
    assert!(child.is_finished());
    assert_eq!(join(child).unwrap(), 9);
}

#[multiproc::process]
fn leave_a_thread_behind() -> u8 {
    std::thread::spawn(|| {
        loop {
            std::thread::park();
        }
    });
    5
}

/// A child ends when its entry point returns, without waiting for threads it started (Rust's
/// rule for `main`): the join returns although the thread never ends.
#[multiproc::test]
fn a_child_ends_without_waiting_for_its_threads() {
    let child = multiproc::spawn(leave_a_thread_behind, ()).unwrap();
    let pid = child.pid();
    assert_eq!(join(child).unwrap(), 5);
    assert!(!support::exists(pid) || support::is_zombie(pid));
}
