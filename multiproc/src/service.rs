//! Request/reply: [`service`] makes a [`Client`] (clone it for every caller, in any process)
//! and a [`Server`] (give it to the process that answers).
//!
//! Every call carries its own reply channel, so replies reach the right caller however many
//! call at once, and a server that dies holding a call closes that channel: the caller gets an
//! error naming the service, not a hang.

use std::any::type_name;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{Receiver, Sender, channel};
use crate::error::{Error, ErrorKind, Repr, Result};
use crate::select::{Selectable, Source};

/// One call on the wire: the request and where to send the reply.
#[derive(Serialize, Deserialize)]
#[serde(bound = "Req: Serialize + DeserializeOwned")]
struct Call<Req, Resp> {
    request: Req,
    reply: Sender<Resp>,
}

/// Creates a request/reply service named `name` (the name appears in errors).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::Server;
///
/// #[multiproc::process]
/// fn squarer(server: Server<u64, u64>) -> usize {
///     server.serve(|n| n * n)
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let (client, server) = multiproc::service::<u64, u64>("squarer")?;
///     let handle = multiproc::spawn(squarer, (server,))?;
///     assert_eq!(client.call(12, Duration::from_secs(5))?, 144);
///     drop(client); // the server's loop ends once every client is gone
///     assert_eq!(handle.join()?, 1);
///     Ok(())
/// }
/// ```
///
/// # Errors
///
/// As [`channel`].
pub fn service<Req, Resp>(name: &str) -> Result<(Client<Req, Resp>, Server<Req, Resp>)>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    let (tx, rx) = channel::<Call<Req, Resp>>()?;
    Ok((
        Client {
            tx,
            name: name.to_string(),
        },
        Server {
            rx,
            name: name.to_string(),
        },
    ))
}

/// The calling side of a [`service`]: `Clone`, and `Serialize + Deserialize` so that callers
/// in other processes get their own.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (client, server) = multiproc::service::<u32, u32>("double")?;
/// let callers: Vec<_> = (1..=3)
///     .map(|n| {
///         let client = client.clone(); // one per caller
///         std::thread::spawn(move || client.call(n, Duration::from_secs(5)))
///     })
///     .collect();
/// drop(client);
/// assert_eq!(server.serve(|n| n * 2), 3); // returns once every clone is gone
/// let sum = callers.into_iter().map(|c| c.join().unwrap()).sum::<multiproc::Result<u32>>()?;
/// assert_eq!(sum, 12);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Client<Req, Resp> {
    tx: Sender<Call<Req, Resp>>,
    name: String,
}

/// The answering side of a [`service`]: receive [`Request`]s and reply to each, or let
/// [`serve`](Server::serve) do both. [`service`]'s example shows it in use.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Server<Req, Resp> {
    rx: Receiver<Call<Req, Resp>>,
    name: String,
}

/// One request received by a [`Server`]; [`reply`](Request::reply) answers it. Dropping it
/// without a reply gives the caller an error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (client, server) = multiproc::service::<String, usize>("lengths")?;
/// let caller = std::thread::spawn(move || client.call("four".into(), Duration::from_secs(5)));
/// let request = server.recv()?;
/// let n = request.get().len();
/// request.reply(n)?;
/// assert_eq!(caller.join().unwrap()?, 4);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Request<Req, Resp> {
    request: Req,
    reply: Sender<Resp>,
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    /// Sends `request` and waits at most `timeout` for the reply.
    ///
    /// The timeout bounds the wait for the reply. Sending the request never blocks: the
    /// server's process buffers requests it has not read yet (see [`channel()`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (client, server) = multiproc::service::<u8, u8>("echo")?;
    /// // Nobody answers in time:
    /// assert!(client.call(1, Duration::from_millis(10)).unwrap_err().is_timeout());
    /// drop(server);
    /// // Nobody is left to answer:
    /// assert!(client.call(2, Duration::from_secs(5)).unwrap_err().is_disconnected());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Disconnected`]: the server is gone (every [`Server`] dropped, or its
    ///   process died), or it dropped this request without replying;
    /// - [`ErrorKind::Timeout`]: no reply within `timeout`;
    /// - [`ErrorKind::Serialize`] / [`ErrorKind::Deserialize`] for a request or reply that
    ///   cannot cross.
    pub fn call(&self, request: Req, timeout: Duration) -> Result<Resp> {
        let (reply, answer) = channel::<Resp>()?;
        self.tx
            .send(Call { request, reply })
            .map_err(|e| match e.kind() {
                ErrorKind::Serialize => Error::other(format!(
                    "call to service `{}` failed: cannot serialize the request `{}`: {e}",
                    self.name,
                    type_name::<Req>()
                )),
                _ => self.gone(e, "the server is gone"),
            })?;
        answer.recv_timeout(timeout).map_err(|e| match e.kind() {
            ErrorKind::Timeout => Error::new(Repr::Timeout {
                what: format!("a call to service `{}`", self.name),
                after: timeout,
            }),
            _ => self.gone(
                e,
                "the server dropped the request without replying (it exited, panicked, \
                 dropped the Request, or could not decode it)",
            ),
        })
    }

    /// The service's name, as given to [`service`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (client, _server) = multiproc::service::<u8, u8>("echo")?;
    /// assert_eq!(client.name(), "echo");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    fn gone(&self, e: Error, what: &str) -> Error {
        if e.is_disconnected() {
            Error::new(Repr::Disconnected {
                what: format!("call to service `{}` failed: {what}", self.name),
            })
        } else {
            e
        }
    }
}

impl<Req, Resp> Server<Req, Resp>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    /// Waits for the next request.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (client, server) = multiproc::service::<u8, u8>("increment")?;
    /// let caller = std::thread::spawn(move || client.call(1, Duration::from_secs(5)));
    /// while let Ok(request) = server.recv() {
    ///     let n = *request.get();
    ///     request.reply(n + 1)?;
    /// }
    /// // The loop ended: every client is gone.
    /// assert_eq!(caller.join().unwrap()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] once every [`Client`] is gone; as [`Receiver::recv`]
    /// otherwise.
    pub fn recv(&self) -> Result<Request<Req, Resp>> {
        let call = self.rx.recv()?;
        Ok(Request {
            request: call.request,
            reply: call.reply,
        })
    }

    /// Answers every request with `handler` until every client is gone; returns how many
    /// replies it delivered. A request that cannot be decoded is reported on stderr and skipped
    /// (its caller gets an error); for a caller that already gave up (timed out), the handler
    /// still runs and only the reply is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (client, server) = multiproc::service::<String, usize>("length")?;
    /// let caller = std::thread::spawn(move || client.call("four".into(), Duration::from_secs(5)));
    /// assert_eq!(server.serve(|s| s.len()), 1); // one reply, then every client was gone
    /// assert_eq!(caller.join().unwrap()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn serve(&self, mut handler: impl FnMut(Req) -> Resp) -> usize {
        let mut answered = 0;
        loop {
            match self.recv() {
                Ok(request) => {
                    let response = handler(request.request);
                    // A caller that timed out dropped its reply channel: nothing to do.
                    if request.reply.send(response).is_ok() {
                        answered += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Deserialize => {
                    eprintln!("multiproc: service `{}` skipped a request: {e}", self.name);
                }
                Err(e) if e.is_disconnected() => return answered,
                Err(e) => {
                    eprintln!("multiproc: service `{}` stopped: {e}", self.name);
                    return answered;
                }
            }
        }
    }
}

impl<Req, Resp: Serialize> Request<Req, Resp> {
    /// The request. [`Request`]'s example shows it in use.
    pub fn get(&self) -> &Req {
        &self.request
    }

    /// Sends the reply to the caller.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (client, server) = multiproc::service::<u8, u8>("late")?;
    /// assert!(client.call(1, Duration::from_millis(10)).unwrap_err().is_timeout());
    /// let request = server.recv()?; // the request waited for the server,
    /// assert!(request.reply(2).unwrap_err().is_disconnected()); // its caller did not
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] when the caller gave up waiting.
    pub fn reply(self, response: Resp) -> Result<()> {
        self.reply.send(response)
    }

    /// The request and the one-shot [`Sender`] for its reply, to answer from elsewhere (the
    /// sender can be sent to another process).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let (client, server) = multiproc::service::<u8, u8>("later")?;
    /// let caller = std::thread::spawn(move || client.call(1, Duration::from_secs(5)));
    /// let (n, reply) = server.recv()?.into_parts();
    /// reply.send(n + 1)?;
    /// assert_eq!(caller.join().unwrap()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_parts(self) -> (Req, Sender<Resp>) {
        (self.request, self.reply)
    }
}

impl<Req, Resp> Clone for Client<Req, Resp>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    fn clone(&self) -> Self {
        Client {
            tx: self.tx.clone(),
            name: self.name.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Client<{}, {}>({:?})",
            type_name::<Req>(),
            type_name::<Resp>(),
            self.name
        )
    }
}

impl<Req, Resp> Selectable for Server<Req, Resp> {
    fn __source(&self) -> Source<'_> {
        self.rx.__source()
    }
}

impl<Req, Resp> fmt::Debug for Server<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Server<{}, {}>({:?})",
            type_name::<Req>(),
            type_name::<Resp>(),
            self.name
        )
    }
}

impl<Req: fmt::Debug, Resp> fmt::Debug for Request<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Request").field(&self.request).finish()
    }
}
