//! Across machines, on NATS (the `cluster` feature): durable queues that any process on any
//! host can put into and take from, the distributed form of Python's `BaseManager` queues.
//!
//! A [`Cluster`] is one connection to a NATS server (or cluster of servers) through the
//! official client, `async-nats`. A [`cluster::Queue`](Queue) is a JetStream work-queue stream:
//! it lives in the server, not in any of our processes, survives the processes that use it and
//! a restart of the server (file storage), and gives each item to exactly one consumer. An
//! item leaves the stream only once a consumer has acknowledged it, which `get` does before it
//! returns: a consumer killed before that loses nothing.
//!
//! The API blocks, like the rest of the crate; the `*_async` forms run under any executor.
//! Behind both is one small tokio runtime per [`Cluster`], on a thread of its own.
//!
//! Who can use a queue: anyone with publish and subscribe rights on its subjects
//! (`multiproc.queue.<name>`) and on the JetStream API (`$JS.API.>`). Use NATS accounts and
//! permissions to say who; pass credentials with [`Cluster::builder`].
//!
//! # Examples
//!
//! ```no_run
//! use multiproc::cluster::Cluster;
//! use std::time::Duration;
//!
//! # fn main() -> multiproc::Result<()> {
//! let cluster = Cluster::connect("nats://127.0.0.1:4222")?;
//! let tasks = cluster.queue::<u64>("tasks")?;
//! tasks.put(7)?;
//! assert_eq!(tasks.get_timeout(Duration::from_secs(5))?, 7);
//! # Ok(())
//! # }
//! ```

mod blob;
mod node;
mod pool;
mod queue;
mod service;
mod spawn;
pub mod testing;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectErrorKind;

use crate::error::{Error, Repr, Result};

pub use self::node::Node;
pub use self::pool::Pool;
pub use self::queue::{Iter, Queue};
pub use self::service::Service;
pub use self::spawn::JoinHandle;

/// A connection to a NATS server, shared by every queue made from it. Reconnects on its own
/// when the server goes away (its operations wait, or fail with
/// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) at their timeout).
///
/// # Examples
///
/// ```no_run
/// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
/// // One connection for every queue, service and pool made from it.
/// let tasks = cluster.queue::<u64>("tasks")?;
/// let squarer = cluster.service::<u64, u64>("squarer")?;
/// tasks.put(squarer.call(3)?)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// What a cluster's queues share.
struct Inner {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    runtime: Runtime,
    /// The URL it was connected with, for errors.
    server: String,
    /// How long one request may take (a service call's default timeout).
    request_timeout: Duration,
    /// Where the results of this cluster's pool calls go (started at the first call).
    dispatcher: std::sync::Mutex<Option<Arc<pool::Dispatcher>>>,
}

impl Cluster {
    /// Connects to the NATS server at `url` (`nats://host:port`, several separated by commas)
    /// without credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::cluster::Cluster;
    ///
    /// // Any of these servers will do; the client moves to another if one goes away.
    /// let cluster = Cluster::connect("nats://10.0.0.5:4222,nats://10.0.0.6:4222")?;
    /// println!("{cluster:?}");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when no server answers at
    /// `url` within the connect timeout (5 s), [`ErrorKind::AuthRefused`](crate::ErrorKind::AuthRefused)
    /// when it requires credentials, [`ErrorKind::Other`](crate::ErrorKind::Other) for a URL
    /// that is not one.
    pub fn connect(url: &str) -> Result<Cluster> {
        Cluster::builder().connect(url)
    }

    /// A builder for a connection with credentials, TLS, a name or other timeouts.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let cluster = multiproc::cluster::Cluster::builder()
    ///     .user_and_password("worker", "s3cret")
    ///     .name("worker-1")
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .connect("nats://10.0.0.5:4222")?;
    /// println!("connected to {}", cluster.server());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The server URL this cluster was connected with.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// assert_eq!(cluster.server(), "nats://127.0.0.1:4222");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// Runs `future` on the cluster's runtime and waits for it on this thread.
    fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.block_on(future)
    }

    /// Runs `future` on the cluster's runtime; the returned future completes with it under
    /// any executor.
    async fn run<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.run(future).await
    }

    /// An error of kind `Unreachable` naming this cluster's server.
    fn unreachable(&self, cause: impl std::fmt::Display) -> Error {
        Error::new(Repr::Unreachable {
            server: self.inner.server.clone(),
            cause: cause.to_string(),
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.inner.server)
    }
}

/// How to connect: credentials, TLS, a name, timeouts. From [`Cluster::builder`], whose
/// example shows it in use.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    auth: Option<Auth>,
    require_tls: bool,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    name: Option<String>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
}

#[derive(Clone)]
enum Auth {
    UserPassword(String, String),
    Token(String),
    NKey(String),
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        match self {
            Auth::UserPassword(user, _) => write!(f, "user {user:?} and a password"),
            Auth::Token(_) => write!(f, "a token"),
            Auth::NKey(_) => write!(f, "an nkey seed"),
            Auth::CredentialsFile(path) => write!(f, "credentials file {}", path.display()),
        }
    }
}

impl Builder {
    /// Authenticates with a user name and password.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().user_and_password("worker", "s3cret");
    /// assert!(!format!("{builder:?}").contains("s3cret")); // never shown
    /// ```
    pub fn user_and_password(mut self, user: &str, password: &str) -> Builder {
        self.auth = Some(Auth::UserPassword(user.to_string(), password.to_string()));
        self
    }

    /// Authenticates with a token.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().token("t0ken");
    /// # drop(builder);
    /// ```
    pub fn token(mut self, token: &str) -> Builder {
        self.auth = Some(Auth::Token(token.to_string()));
        self
    }

    /// Authenticates with an nkey seed (`SU...`).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().nkey("SUAM...");
    /// # drop(builder);
    /// ```
    pub fn nkey(mut self, seed: &str) -> Builder {
        self.auth = Some(Auth::NKey(seed.to_string()));
        self
    }

    /// Authenticates with a `.creds` file (a user JWT and its nkey seed, as `nsc` writes them).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().credentials_file("worker.creds");
    /// # drop(builder);
    /// ```
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.auth = Some(Auth::CredentialsFile(path.into()));
        self
    }

    /// Refuses to connect without TLS.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().require_tls(true);
    /// # drop(builder);
    /// ```
    pub fn require_tls(mut self, required: bool) -> Builder {
        self.require_tls = required;
        self
    }

    /// Trusts the certificate authorities in this PEM file (beside the system's).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().root_certificates("ca.pem");
    /// # drop(builder);
    /// ```
    pub fn root_certificates(mut self, pem: impl Into<PathBuf>) -> Builder {
        self.root_certificates.push(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM files) to the server.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().client_certificate("me.pem", "me.key");
    /// # drop(builder);
    /// ```
    pub fn client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Builder {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// The connection's name, as the server's monitoring shows it.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder().name("worker-1");
    /// # drop(builder);
    /// ```
    pub fn name(mut self, name: &str) -> Builder {
        self.name = Some(name.to_string());
        self
    }

    /// How long the first connection may take (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder()
    ///     .connect_timeout(std::time::Duration::from_secs(1));
    /// # drop(builder);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Builder {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long one request to the server may take before the operation fails with
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) (default 5 s; a `get` that
    /// waits for an item is not one request).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = multiproc::cluster::Cluster::builder()
    ///     .request_timeout(std::time::Duration::from_secs(10));
    /// # drop(builder);
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Builder {
        self.request_timeout = Some(timeout);
        self
    }

    /// Connects to the server(s) at `url`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::builder()
    ///     .credentials_file("worker.creds")
    ///     .connect("nats://10.0.0.5:4222")?;
    /// println!("connected to {}", cluster.server());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Cluster::connect`]; [`ErrorKind::Io`](crate::ErrorKind::Io) for a credentials
    /// file that cannot be read.
    pub fn connect(self, url: &str) -> Result<Cluster> {
        let runtime = Runtime::start()?;
        let server = url.to_string();
        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(5));
        let connecting = {
            let server = server.clone();
            async move {
                let client = self.connect_async(&server, request_timeout).await?;
                // The JetStream context starts a task: it is made on the runtime.
                let jetstream = async_nats::jetstream::new(client.clone());
                Ok::<_, Error>((client, jetstream))
            }
        };
        let (client, jetstream) = runtime.block_on(connecting)??;
        Ok(Cluster {
            inner: Arc::new(Inner {
                client,
                jetstream,
                runtime,
                server,
                request_timeout,
                dispatcher: std::sync::Mutex::new(None),
            }),
        })
    }

    async fn connect_async(
        self,
        server: &str,
        request_timeout: Duration,
    ) -> Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(5)))
            .request_timeout(Some(request_timeout))
            .require_tls(self.require_tls);
        options = match self.auth {
            None => options,
            Some(Auth::UserPassword(user, password)) => options.user_and_password(user, password),
            Some(Auth::Token(token)) => options.token(token),
            Some(Auth::NKey(seed)) => options.nkey(seed),
            Some(Auth::CredentialsFile(path)) => {
                options.credentials_file(&path).await.map_err(|e| {
                    Error::io(
                        format!("cannot read the credentials file {}", path.display()),
                        e,
                    )
                })?
            }
        };
        for pem in self.root_certificates {
            options = options.add_root_certificates(pem);
        }
        if let Some((cert, key)) = self.client_certificate {
            options = options.add_client_certificate(cert, key);
        }
        if let Some(name) = self.name {
            options = options.name(name);
        }
        options.connect(server).await.map_err(|e| {
            let cause = describe(&e);
            match e.kind() {
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                    Error::new(Repr::AuthRefused {
                        server: server.to_string(),
                        cause,
                    })
                }
                ConnectErrorKind::ServerParse => Error::other(format!(
                    "`{server}` is not a NATS server address (nats://host:port): {cause}"
                )),
                _ => Error::new(Repr::Unreachable {
                    server: server.to_string(),
                    cause,
                }),
            }
        })
    }
}

/// This process on this host, as errors and results name it: `<host name>-<pid>`.
fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// `name` as the name of a cluster `what` (a queue, a service): letters, digits, `-` and
/// `_`, so that it is one token of a subject and part of a stream's name.
fn check_name(name: &str, what: &str) -> Result<()> {
    let fits = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fits {
        Ok(())
    } else {
        Err(Error::other(format!(
            "`{name}` cannot name a cluster {what}: use letters, digits, `-` and `_` only"
        )))
    }
}

/// `value` encoded to cross machines: a `Serialize` error for one that cannot be encoded or
/// carries descriptors (nothing is sent then).
fn encode_portable<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    use crate::ipc::codec as wire;
    let encoded = wire::with_encoded(value, |bytes, fds| {
        if fds.is_empty() {
            Ok(bytes.to_vec())
        } else {
            wire::not_sent();
            Err(fds.len())
        }
    })
    .map_err(Error::serialize::<T>)?;
    encoded.map_err(|n| {
        Error::serialize::<T>(format!(
            "it carries {n} file descriptors (channel ends, local queues, Bytes or \
             SharedMemory), which cannot cross machines: send plain data"
        ))
    })
}

/// An error and its sources, in one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// One current-thread tokio runtime, driven by a thread of its own until dropped: what the
/// blocking API and the `*_async` forms run the client's futures on.
struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    fn start() -> Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the cluster's runtime", e))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("multiproc-cluster".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| Error::io("cannot start the cluster's runtime thread", e))?;
        Ok(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| Error::other("the cluster's runtime stopped before the operation ended"))
    }

    async fn run<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle
            .spawn(future)
            .await
            .map_err(|e| Error::other(format!("a cluster operation did not finish: {e}")))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}
