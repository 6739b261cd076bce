//! [`Service`]: named request/reply across hosts, on NATS request/reply with a queue group
//! (several servers share the load; each request goes to one of them).

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Cluster, describe};
use crate::bytes::Bytes;
use crate::error::{Error, ErrorKind, Repr, Result};
use crate::ipc::codec as wire;

/// How long [`Service::serve`] waits for a request before it looks at
/// [`shutdown_requested`](crate::shutdown_requested) again.
const SERVE_SLICE: Duration = Duration::from_millis(200);

/// What a server answers.
#[derive(Serialize, Deserialize)]
enum Reply {
    /// The encoded response.
    Ok(Bytes),
    /// The request could not be served: why, the kind of error, and which host said so.
    Failed {
        kind: String,
        text: String,
        host: String,
    },
}

/// A named request/reply service of a cluster: `serve` on any number of hosts (they share the
/// load), `call` from anywhere. From [`Cluster::service`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
/// let squarer = cluster.service::<u64, u64>("squarer")?;
/// // On the serving hosts: squarer.serve(|n| n * n)?;
/// assert_eq!(squarer.call_timeout(12, Duration::from_secs(5))?, 144);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Service<Req, Resp> {
    cluster: Cluster,
    name: String,
    subject: String,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl Cluster {
    /// The service named `name` (letters, digits, `-` and `_`), for calling it or serving it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let user_ids = cluster.service::<String, Option<u64>>("user-ids")?;
    /// // Elsewhere: user_ids.serve(|name| lookup(&name))?;
    /// let id = user_ids.call("ada".to_string())?;
    /// println!("{id:?}");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`] for a name outside those characters.
    pub fn service<Req, Resp>(&self, name: &str) -> Result<Service<Req, Resp>>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
    {
        super::check_name(name, "service")?;
        Ok(Service {
            cluster: self.clone(),
            name: name.to_string(),
            subject: format!("multiproc.service.{name}"),
            _types: PhantomData,
        })
    }
}

impl<Req, Resp> Service<Req, Resp>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    /// Calls the service and waits at most the cluster's request timeout (5 s unless
    /// [`Builder::request_timeout`](super::Builder::request_timeout) says otherwise).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let answer: u64 = cluster.service::<u64, u64>("squarer")?.call(3)?;
    /// assert_eq!(answer, 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] when no host serves it;
    /// [`ErrorKind::Timeout`]; the server's error, with its kind
    /// (`Panicked` for a handler that panicked, `Deserialize` for a request it could not
    /// decode); `Serialize` for a request that cannot be encoded or carries descriptors.
    pub fn call(&self, request: Req) -> Result<Resp> {
        self.call_timeout(request, self.cluster.inner.request_timeout)
    }

    /// Calls the service and waits at most `timeout` for the answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let squarer = cluster.service::<u64, u64>("squarer")?;
    /// match squarer.call_timeout(7, Duration::from_millis(500)) {
    ///     Ok(n) => assert_eq!(n, 49),
    ///     Err(e) if e.kind() == multiproc::ErrorKind::Timeout => eprintln!("no answer in time"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`](Service::call).
    pub fn call_timeout(&self, request: Req, timeout: Duration) -> Result<Resp> {
        let call = self.request(&request, timeout)?;
        self.answer(&self.cluster.block_on(call)??)
    }

    /// Calls the service without blocking the thread, under any executor; waits at most the
    /// cluster's request timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let n = cluster.service::<u64, u64>("squarer")?.call_async(4).await?;
    ///     assert_eq!(n, 16);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`](Service::call).
    pub async fn call_async(&self, request: Req) -> Result<Resp> {
        let call = self.request(&request, self.cluster.inner.request_timeout)?;
        self.answer(&self.cluster.run(call).await??)
    }

    /// The request, encoded, as a future of the reply's bytes.
    fn request(
        &self,
        request: &Req,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<Vec<u8>>> + Send + 'static> {
        let payload = super::encode_portable(request)?;
        let client = self.cluster.inner.client.clone();
        let cluster = self.cluster.clone();
        let (subject, name) = (self.subject.clone(), self.name.clone());
        Ok(async move {
            let asked = tokio::time::timeout(timeout, client.request(subject, payload.into()));
            let message = match asked.await {
                Err(_) => {
                    return Err(Error::new(Repr::Timeout {
                        what: format!("calling the cluster service `{name}`"),
                        after: timeout,
                    }));
                }
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        async_nats::RequestErrorKind::NoResponders => {
                            Error::new(Repr::Disconnected {
                                what: format!(
                                    "no host serves the cluster service `{name}` (start one \
                                     with `service.serve(handler)`)"
                                ),
                            })
                        }
                        async_nats::RequestErrorKind::TimedOut => Error::new(Repr::Timeout {
                            what: format!("calling the cluster service `{name}`"),
                            after: timeout,
                        }),
                        _ => cluster.unreachable(describe(&e)),
                    });
                }
                Ok(Ok(message)) => message,
            };
            Ok(message.payload.to_vec())
        })
    }

    /// The response in a server's reply, or the error it reports.
    fn answer(&self, reply: &[u8]) -> Result<Resp> {
        match wire::decode_slice::<Reply>(reply, Vec::new()) {
            Ok(Reply::Ok(bytes)) => decode::<Resp>(&bytes),
            Ok(Reply::Failed { kind, text, host }) => Err(Error::remote(
                ErrorKind::from_name(&kind),
                text,
                host,
                None,
                None,
            )),
            Err(message) => Err(Error::new(Repr::Deserialize {
                type_name: type_name::<Resp>(),
                message,
            })),
        }
    }

    /// Serves the calls that reach this host (sharing them with every other host that
    /// serves the same name) until the process is asked to shut down
    /// ([`shutdown_requested`](crate::shutdown_requested)); returns how many it answered.
    /// A request that cannot be decoded, or whose handler panics, gets an error reply, is
    /// reported on stderr, and the loop goes on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let served = cluster.service::<u64, u64>("squarer")?.serve(|n| n * n)?;
    /// println!("answered {served} calls");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unreachable`] when the subscription cannot
    /// be made.
    pub fn serve(&self, mut handler: impl FnMut(Req) -> Resp) -> Result<usize> {
        let client = self.cluster.inner.client.clone();
        let subject = self.subject.clone();
        let subscribed = self.cluster.block_on(async move {
            let subscriber = client
                .queue_subscribe(subject, "multiproc".to_string())
                .await
                .map_err(|e| describe(&e))?;
            client.flush().await.map_err(|e| describe(&e))?;
            Ok::<_, String>(subscriber)
        })?;
        let subscriber = subscribed.map_err(|e| {
            self.cluster
                .unreachable(format!("cannot serve `{}`: {e}", self.name))
        })?;
        let subscriber = std::sync::Arc::new(tokio::sync::Mutex::new(subscriber));
        let host = super::this_process();
        let mut served = 0;
        while !crate::shutdown_requested() {
            let next = {
                let subscriber = std::sync::Arc::clone(&subscriber);
                async move {
                    let mut subscriber = subscriber.lock().await;
                    tokio::time::timeout(SERVE_SLICE, subscriber.next()).await
                }
            };
            let message = match self.cluster.block_on(next)? {
                Err(_) => continue, // no call within the slice
                Ok(None) => break,  // the connection is closed for good
                Ok(Some(message)) => message,
            };
            let Some(reply_to) = message.reply.clone() else {
                eprintln!(
                    "multiproc: the cluster service `{}` dropped a request without a reply \
                     subject",
                    self.name
                );
                continue;
            };
            let reply = match wire::decode_slice::<Req>(&message.payload, Vec::new()) {
                Err(e) => {
                    eprintln!(
                        "multiproc: the cluster service `{}` rejected a malformed request: {e}",
                        self.name
                    );
                    Reply::Failed {
                        kind: format!("{:?}", ErrorKind::Deserialize),
                        text: format!(
                            "the cluster service `{}` could not decode the request as a {}: {e}",
                            self.name,
                            type_name::<Req>()
                        ),
                        host: host.clone(),
                    }
                }
                Ok(request) => match catch_unwind(AssertUnwindSafe(|| handler(request))) {
                    Ok(response) => {
                        match wire::with_encoded(&response, |bytes, fds| {
                            fds.is_empty().then(|| bytes.to_vec())
                        }) {
                            Ok(Some(bytes)) => Reply::Ok(Bytes::from(bytes)),
                            Ok(None) => Reply::Failed {
                                kind: format!("{:?}", ErrorKind::Serialize),
                                text: "the response carries file descriptors, which cannot \
                                       cross machines"
                                    .to_string(),
                                host: host.clone(),
                            },
                            Err(e) => Reply::Failed {
                                kind: format!("{:?}", ErrorKind::Serialize),
                                text: format!(
                                    "cannot serialize a response of type `{}`: {e}",
                                    type_name::<Resp>()
                                ),
                                host: host.clone(),
                            },
                        }
                    }
                    Err(payload) => {
                        let panic = crate::child::panic::remote_panic(payload);
                        eprintln!(
                            "multiproc: the handler of the cluster service `{}` panicked: {panic}",
                            self.name
                        );
                        Reply::Failed {
                            kind: format!("{:?}", ErrorKind::Panicked),
                            text: format!(
                                "the handler of the cluster service `{}` panicked: {panic}",
                                self.name
                            ),
                            host: host.clone(),
                        }
                    }
                },
            };
            let Ok(bytes) = wire::with_encoded(&reply, |bytes, _| bytes.to_vec()) else {
                continue;
            };
            let client = self.cluster.inner.client.clone();
            let _ = self
                .cluster
                .block_on(async move { client.publish(reply_to, bytes.into()).await });
            served += 1;
        }
        Ok(served)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    wire::decode_slice(bytes, Vec::new()).map_err(|message| {
        Error::new(Repr::Deserialize {
            type_name: type_name::<T>(),
            message,
        })
    })
}

impl<Req, Resp> Clone for Service<Req, Resp> {
    fn clone(&self) -> Self {
        Service {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            subject: self.subject.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for Service<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cluster::Service<{}, {}>({:?})",
            type_name::<Req>(),
            type_name::<Resp>(),
            self.name
        )
    }
}
