//! Regression tests for issue 13 ("faults must not break the promises"), one per item, each
//! named after it: a child that attacks what it was handed, descriptors it should not have,
//! timeouts that must hold.

mod support;

use multiproc::SharedMemory;

/// A hostile child: truncates to 0 bytes every shared region (memfd) it holds; returns how
/// many it could truncate.
#[multiproc::process]
fn truncate_shared_regions(region: SharedMemory) -> usize {
    let mut truncated = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target
            .to_string_lossy()
            .starts_with("/memfd:multiproc-shared")
        {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        // SAFETY: ftruncate on a descriptor number this process holds.
        if unsafe { libc::ftruncate(fd, 0) } == 0 {
            truncated += 1;
        }
    }
    drop(region);
    truncated
}

/// Item 4: a child that shrinks a `SharedMemory` it was sent could make its parent die of
/// SIGBUS on the next read. Regions are sealed against shrinking now.
#[multiproc::test]
fn issue13_4_a_child_cannot_shrink_a_shared_region_under_its_parent() {
    let region = SharedMemory::from_byte(7, 1 << 20).unwrap();
    let child = multiproc::spawn(truncate_shared_regions, (region.clone(),)).unwrap();
    let truncated = support::join(child).unwrap();
    assert_eq!(truncated, 0, "the child shrank the region it was sent");
    // Without the seal this read would kill the test process with SIGBUS.
    assert!(region.iter().all(|b| *b == 7));
}

/// The descriptors above stderr that this process holds, its own bootstrap socket aside
/// (the one descriptor a child inherits, which its hook marks close-on-exec again).
#[multiproc::process]
fn inheritable_fds() -> Vec<i32> {
    support::inheritable_fds()
}

#[multiproc::process]
fn wait_for(go: multiproc::Receiver<()>) {
    let _ = go.recv();
}

/// What C code does: descriptors without close-on-exec. Returns `/dev/zero` and a pipe.
fn open_like_c() -> (i32, [i32; 2]) {
    // SAFETY: open and pipe return new descriptors (or -1, checked) that this test closes.
    unsafe {
        let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY);
        let mut pipe = [0; 2];
        assert!(zero >= 0 && libc::pipe(pipe.as_mut_ptr()) == 0);
        (zero, pipe)
    }
}

/// The fault tests that count or leak descriptors must not overlap.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Item 5: a child inherited every descriptor of the parent that lacked close-on-exec (a
/// `/dev/zero` opened by C code, a pipe): the book promises exactly one. Both spawn paths.
#[multiproc::test]
fn issue13_5_a_child_inherits_only_its_bootstrap_socket() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let (zero, pipe) = open_like_c();
    let zygote = multiproc::Zygote::start().unwrap();
    let exec = support::join(multiproc::spawn(inheritable_fds, ()).unwrap()).unwrap();
    let forked = support::join(
        multiproc::Builder::new()
            .zygote(&zygote)
            .spawn_fn(inheritable_fds, ())
            .unwrap(),
    )
    .unwrap();
    // SAFETY: closes the descriptors `open_like_c` opened.
    unsafe {
        libc::close(zero);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(exec, Vec::<i32>::new(), "inherited by an exec'd child");
    assert_eq!(forked, Vec::<i32>::new(), "inherited by a zygote's child");
}

/// Item 5, as a user sees it: a pipe whose writer the parent closed reached end of file only
/// once a child (which held a copy) exited.
#[multiproc::test]
fn issue13_5_a_pipe_closed_by_the_parent_ends_while_a_child_runs() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let (zero, [read, write]) = open_like_c();
    let (go, go_rx) = multiproc::channel().unwrap();
    let child = multiproc::spawn(wait_for, (go_rx,)).unwrap();
    // SAFETY: closes descriptors `open_like_c` opened; polls one valid descriptor.
    let (ready, n) = unsafe {
        libc::close(zero);
        libc::close(write);
        let mut pfd = libc::pollfd {
            fd: read,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = libc::poll(&mut pfd, 1, support::DEADLINE.as_millis() as i32);
        let mut byte = 0u8;
        // Only once readable: a read with the writer still open somewhere would block.
        let n = if ready == 1 {
            libc::read(read, (&raw mut byte).cast(), 1)
        } else {
            -1
        };
        libc::close(read);
        (ready, n)
    };
    go.send(()).unwrap();
    support::join(child).unwrap();
    assert_eq!((ready, n), (1, 0), "end of file while the child runs");
}

/// Item 8: the per-message limit is stated in descriptors, with what each kind of end costs
/// (the text said 252 channel ends, where 126 unbounded senders are the real limit).
#[test]
fn issue13_8_the_descriptor_limit_names_what_each_end_costs() {
    let (tx, rx) = multiproc::channel::<Vec<multiproc::Sender<u8>>>().unwrap();
    let (one, _keep) = multiproc::channel::<u8>().unwrap();
    tx.send(vec![one.clone(); 126]).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 126);
    let e = tx.send(vec![one; 127]).unwrap_err();
    assert_eq!(e.kind(), multiproc::ErrorKind::Serialize, "{e}");
    let text = e.to_string();
    assert!(text.contains("at most 252 descriptors"), "{text}");
    assert!(
        text.contains("an unbounded Sender or Receiver takes 2"),
        "{text}"
    );
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Inner {
    a: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Flattened {
    #[serde(flatten)]
    inner: Inner,
    b: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Skipping {
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<u32>,
    b: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
    Text(String),
}

/// Item 8: serde attributes that postcard cannot carry compiled and then failed with
/// postcard's own words ("The length of a sequence must be known", "Found an Option
/// discriminant that wasn't 0 or 1"); the error names the likely cause and the fix now.
#[test]
fn issue13_8_serde_attributes_postcard_cannot_carry_name_the_cause() {
    let names_cause = |e: multiproc::Error| {
        let text = e.to_string();
        assert!(text.contains("#[serde(flatten)]"), "{text}");
        assert!(text.contains("not self-describing"), "{text}");
    };
    let (tx, _rx) = multiproc::channel::<Flattened>().unwrap();
    let flat = Flattened {
        inner: Inner { a: 1 },
        b: 2,
    };
    let e = tx.send(flat).unwrap_err();
    assert_eq!(e.kind(), multiproc::ErrorKind::Serialize);
    names_cause(e);
    let (tx, rx) = multiproc::channel::<Skipping>().unwrap();
    tx.send(Skipping { a: None, b: 7 }).unwrap();
    let e = rx.recv().unwrap_err();
    assert_eq!(e.kind(), multiproc::ErrorKind::Deserialize);
    names_cause(e);
    let (tx, rx) = multiproc::channel::<Untagged>().unwrap();
    tx.send(Untagged::Number(3)).unwrap();
    let e = rx.recv().unwrap_err();
    assert_eq!(e.kind(), multiproc::ErrorKind::Deserialize);
    names_cause(e);
    let _ = Untagged::Text(String::new());
}

/// Receives every message until the senders are gone; says when it is in its receive loop.
#[multiproc::process]
fn drain(inbox: multiproc::Receiver<Vec<u8>>, ready: multiproc::Sender<()>) -> usize {
    ready.send(()).unwrap();
    let mut n = 0;
    for (i, message) in inbox.into_iter().enumerate() {
        assert_eq!(message[0] as usize, i % 256, "in order");
        n += 1;
    }
    n
}

/// SIGCONTs a stopped process on drop, so that a failed assertion never leaves it stopped.
struct Stopped(u32);

impl Stopped {
    /// Stops our child `pid` and waits until it is stopped (a signal takes effect when the
    /// child next runs, not when it is sent).
    fn stop(pid: u32) -> Stopped {
        // SAFETY: kill takes plain integers; `pid` is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let stopped = Stopped(pid);
        // SAFETY: waitid fills the zeroed siginfo; WNOWAIT leaves the child's state as it
        // is for its JoinHandle, and WSTOPPED returns once it is stopped.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT)
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Item 3: a stopped receiving process (SIGSTOP, a debugger) drains nothing, so an unbounded
/// channel's senders fill the kernel's socket buffer and then wait. The documented limit
/// holds: `try_send` reports `Full` (never a hang) after a few hundred small messages, and
/// once the receiver runs again every message arrives, in order.
#[multiproc::test]
fn issue13_3_a_stopped_receiver_fills_the_socket_buffer_then_senders_wait() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    for size in [8_usize, 100, 1024] {
        let (tx, rx) = multiproc::channel::<Vec<u8>>().unwrap();
        let (ready_tx, ready) = multiproc::channel().unwrap();
        let child = multiproc::spawn(drain, (rx, ready_tx)).unwrap();
        ready.recv_timeout(support::DEADLINE).unwrap();
        let stopped = Stopped::stop(child.pid());
        let mut sent = 0;
        let full = loop {
            match tx.try_send(vec![(sent % 256) as u8; size]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                sent < 100_000,
                "the buffer of a stopped receiver never filled"
            );
        };
        assert_eq!(full.kind(), multiproc::ErrorKind::Full, "{full}");
        eprintln!("{size} B messages: {sent} fit while the receiver was stopped");
        assert!(sent >= 50, "{sent} messages of {size} B");
        let e = tx
            .send_timeout(vec![0; size], std::time::Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(e.kind(), multiproc::ErrorKind::Timeout);
        drop(stopped);
        tx.send(vec![(sent % 256) as u8; size]).unwrap();
        drop(tx);
        assert_eq!(support::join(child).unwrap(), sent + 1);
    }
}

/// Refuses to be encoded, with a reason of its own.
#[derive(Debug)]
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused: the disk is on fire"))
    }
}

impl<'de> serde::Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("refused"))
    }
}

/// Decodes only even numbers.
#[derive(Debug, serde::Serialize)]
struct Even(u32);

impl<'de> serde::Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = <u32 as serde::Deserialize>::deserialize(d)?;
        if n % 2 == 0 {
            Ok(Even(n))
        } else {
            Err(serde::de::Error::custom(format!("{n} is odd")))
        }
    }
}

#[multiproc::process]
fn give_refuses() -> Refuses {
    Refuses
}

/// Item 8: a user's own `Error::custom` text reached our error as "Serde Serialization Error"
/// or "Serde Deserialization Error"; it is the error's text now, in a send, a receive and a
/// child's result.
#[multiproc::test]
fn issue13_8_a_custom_serde_error_keeps_its_text() {
    let (tx, _rx) = multiproc::channel::<(u8, Refuses)>().unwrap();
    let e = tx.send((1, Refuses)).unwrap_err();
    assert!(
        e.to_string().contains("refused: the disk is on fire"),
        "{e}"
    );
    let (tx, rx) = multiproc::channel::<Vec<Even>>().unwrap();
    tx.send(vec![Even(2), Even(3)]).unwrap();
    let e = rx.recv().unwrap_err();
    assert!(e.to_string().contains("3 is odd"), "{e}");
    let e = support::join(multiproc::spawn(give_refuses, ()).unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("refused: the disk is on fire"),
        "{e}"
    );
}
