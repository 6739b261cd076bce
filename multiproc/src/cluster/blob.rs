//! Payloads larger than the server's `max_payload`: the bytes go into a JetStream object
//! store (`multiproc-blobs`, chunked by the client), and the message carries only their name
//! in a header. The taker reads them back and deletes them once it has acknowledged the
//! message; blobs nobody took (their taker died between the two) go after [`MAX_AGE`].

use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use async_nats::{HeaderMap, jetstream};

use super::describe;

const BUCKET: &str = "multiproc-blobs";
/// The header that names a message's blob.
pub(super) const HEADER: &str = "Multiproc-Blob";
/// How long a blob nobody took stays.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

async fn store(jetstream: &jetstream::Context) -> Result<ObjectStore, String> {
    if let Ok(store) = jetstream.get_object_store(BUCKET).await {
        return Ok(store);
    }
    jetstream
        .create_object_store(object_store::Config {
            bucket: BUCKET.to_string(),
            max_age: MAX_AGE,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| describe(&e))
}

/// What to publish for `payload`: itself when it fits `limit`, else an empty body and a
/// header naming the blob it was stored as (under `name`).
pub(super) async fn wrap(
    jetstream: &jetstream::Context,
    headers: &mut HeaderMap,
    payload: Vec<u8>,
    limit: usize,
    name: &str,
) -> Result<Vec<u8>, String> {
    // Headers and protocol take a little of the limit.
    if payload.len() + 1024 <= limit {
        return Ok(payload);
    }
    let store = store(jetstream).await?;
    let mut reader = payload.as_slice();
    store
        .put(name, &mut reader)
        .await
        .map_err(|e| format!("cannot store a large payload: {}", describe(&e)))?;
    headers.insert(HEADER, name);
    Ok(Vec::new())
}

/// [`unwrap`] from a thread outside the cluster's runtime: the body at once when the message
/// names no blob (no trip through the runtime), else the blob, read on the runtime.
pub(super) fn unwrap_blocking(
    cluster: &super::Cluster,
    message: &async_nats::Message,
) -> Result<Vec<u8>, String> {
    if message
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER))
        .is_none()
    {
        return Ok(message.payload.to_vec());
    }
    let (jetstream, message) = (cluster.inner.jetstream.clone(), message.clone());
    cluster
        .block_on(
            async move { unwrap(&jetstream, message.headers.as_ref(), &message.payload).await },
        )
        .map_err(|e| e.to_string())?
}

/// The payload a message carries: its body, or the blob its header names.
pub(super) async fn unwrap(
    jetstream: &jetstream::Context,
    headers: Option<&HeaderMap>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let Some(name) = headers.and_then(|h| h.get(HEADER)) else {
        return Ok(body.to_vec());
    };
    use tokio::io::AsyncReadExt;
    let store = store(jetstream).await?;
    let mut object = store
        .get(name.as_str())
        .await
        .map_err(|e| format!("cannot read a large payload: {}", describe(&e)))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read a large payload: {e}"))?;
    Ok(bytes)
}

/// [`discard`] from a thread outside the cluster's runtime: nothing to do (and no trip
/// through the runtime) when the message names no blob.
pub(super) fn discard_blocking(cluster: &super::Cluster, message: &async_nats::Message) {
    if message
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER))
        .is_none()
    {
        return;
    }
    let (jetstream, message) = (cluster.inner.jetstream.clone(), message.clone());
    let _ = cluster.block_on(async move { discard(&jetstream, message.headers.as_ref()).await });
}

/// Deletes the blob a message's header names, if any (best effort: it ages out otherwise).
pub(super) async fn discard(jetstream: &jetstream::Context, headers: Option<&HeaderMap>) {
    let Some(name) = headers.and_then(|h| h.get(HEADER)) else {
        return;
    };
    if let Ok(store) = store(jetstream).await {
        let _ = store.delete(name.as_str()).await;
    }
}
