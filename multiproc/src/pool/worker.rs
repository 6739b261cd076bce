//! The pool worker: a child process that runs chunks of tasks until its pool lets it go.
//!
//! Before each task it writes the task's sequence number and start time into a memory word it
//! shares with the pool, so that when it dies (killed, crashed, out of memory, timed out) the
//! pool knows exactly which task it was running: that one fails, the others it held are
//! handed to another worker.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::channel::{Receiver, Sender};
use crate::ipc::codec as wire;
use crate::ipc::packed::Packed;
use crate::ipc::shm::Region;
use crate::proto::{ChildContext, Outcome};
use crate::registry::{self, EntryPoint, TaskInput};
pub(crate) use crate::sys::monotonic_ns;

/// The worker's entry key in the registry.
pub(crate) const WORKER_KEY: &str = "multiproc::pool::worker";

/// The progress word's value while the worker runs no task.
pub(crate) const IDLE: u64 = u64::MAX;

/// A chunk slot's state once the worker has taken the chunk (the slot holds `k | TAKEN`).
const TAKEN: u64 = 1 << 63;
/// A chunk slot's state once the pool has taken the chunk back (`k | REVOKED`).
const REVOKED: u64 = 1 << 62;

/// Runs one task: decodes the arguments, calls `call` (catching a panic), encodes the outcome.
pub(crate) fn run_task<A, R>(input: TaskInput<'_>, call: fn(A) -> R)
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let TaskInput { args, fds, out } = input;
    let outcome = match wire::decode_slice::<A>(args, fds) {
        Ok(args) => match panic::catch_unwind(AssertUnwindSafe(|| call(args))) {
            Ok(value) => Outcome::Returned(value),
            Err(payload) => Outcome::Panicked(crate::child::panic::remote_panic(payload)),
        },
        Err(message) => Outcome::StateNotDeserializable {
            type_name: std::any::type_name::<A>().to_string(),
            message,
        },
    };
    push_outcome(out, &outcome);
}

fn push_outcome<R: Serialize>(out: &mut Packed, outcome: &Outcome<R>) {
    if let Err(message) = out.push_encoded(outcome) {
        push_failure(out, message);
    }
}

/// An outcome that says the real one could not be encoded (any `R` decodes it: the variant
/// carries no `R`).
fn push_failure(out: &mut Packed, message: String) {
    let failure = Outcome::<()>::OutputNotSerializable {
        type_name: String::new(),
        message,
    };
    if let Ok(Ok(())) = wire::with_encoded(&failure, |bytes, fds| out.push(bytes, fds)) {
        return;
    }
    out.push_owned(&[], Vec::new());
}

/// Pool → worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Run these tasks, numbered from `first_seq`, with the entry point `key`, unless the
    /// pool took chunk `k` (this worker's `k`-th) back meanwhile: see [`Progress::take`].
    Chunk {
        k: u64,
        first_seq: u64,
        key: std::borrow::Cow<'static, str>,
        items: Packed,
    },
}

/// Worker → pool.
#[derive(Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The outcomes of the first `outcomes.len()` tasks of the chunk that starts at
    /// `first_seq` (fewer than the chunk when the worker retires after them).
    Done { first_seq: u64, outcomes: Packed },
    /// The chunk at `first_seq` was taken back by the pool before it started: not run.
    Skipped { first_seq: u64 },
    /// The initializer (if any) returned: the worker takes tasks.
    Ready,
    /// The initializer failed: the worker exits without running tasks.
    InitFailed { message: String },
}

/// The pool's initializer: an entry point and its encoded arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct InitCall {
    pub(crate) key: String,
    pub(crate) args: Packed,
}

/// What a worker starts with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerBoot {
    pub(crate) tasks: Receiver<ToWorker>,
    pub(crate) results: Sender<FromWorker>,
    pub(crate) progress: Progress,
    pub(crate) initializer: Option<InitCall>,
    pub(crate) max_tasks: Option<u64>,
    /// Whether the pool has a task timeout: only then does a task's start time matter.
    pub(crate) timed: bool,
}

/// The memory a worker and its pool share: word 0 is the sequence number of the task it is
/// running ([`IDLE`] between tasks), word 1 the task's start on the monotonic clock, in ns;
/// words 2 and 3 are the states of the worker's chunks `k` with `k % 2 == 0` and `== 1`
/// (a worker holds at most two at once): `k` while queued, then `k | TAKEN` or
/// `k | REVOKED`, whichever side swaps it first. That is what lets the pool hand a chunk
/// queued behind a long task to an idle worker without ever running it twice.
#[derive(Clone)]
pub(crate) struct Progress(Arc<Region>);

impl Progress {
    pub(crate) fn new() -> std::io::Result<Progress> {
        let region = Region::new("multiproc-pool-progress", 32)?;
        region.word64(0).store(IDLE, Ordering::Release);
        region.word64(2).store(IDLE, Ordering::Release);
        region.word64(3).store(IDLE, Ordering::Release);
        Ok(Progress(Arc::new(region)))
    }

    /// The pool: chunk `k` is about to be sent.
    pub(crate) fn queue(&self, k: u64) {
        self.0
            .word64(2 + (k % 2) as usize)
            .store(k, Ordering::Release);
    }

    /// The pool: chunk `k` was not sent after all.
    pub(crate) fn unqueue(&self, k: u64) {
        let _ = self.0.word64(2 + (k % 2) as usize).compare_exchange(
            k,
            IDLE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The pool: takes chunk `k` back if the worker has not taken it yet.
    pub(crate) fn revoke(&self, k: u64) -> bool {
        self.0
            .word64(2 + (k % 2) as usize)
            .compare_exchange(k, k | REVOKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The worker: takes chunk `k`, unless the pool took it back.
    pub(super) fn take(&self, k: u64) -> bool {
        self.0
            .word64(2 + (k % 2) as usize)
            .compare_exchange(k, k | TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The task being run and when it started, if any.
    pub(crate) fn current(&self) -> Option<(u64, u64)> {
        let seq = self.0.word64(0).load(Ordering::Acquire);
        (seq != IDLE).then(|| (seq, self.0.word64(1).load(Ordering::Acquire)))
    }

    fn start(&self, seq: u64, timed: bool) {
        if timed {
            self.0.word64(1).store(monotonic_ns(), Ordering::Release);
        }
        self.0.word64(0).store(seq, Ordering::Release);
    }

    fn finish(&self) {
        self.0.word64(0).store(IDLE, Ordering::Release);
    }
}

impl Serialize for Progress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::attach_fd(self.0.fd(), "pool progress")?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Progress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fd = wire::take_fd(u32::deserialize(d)?, "pool progress")?;
        let region = Region::from_fd(fd, 32)
            .map_err(|e| wire::de_error(format!("cannot map the pool's progress word: {e}")))?;
        Ok(Progress(Arc::new(region)))
    }
}

fn worker_entry(ctx: ChildContext) -> ! {
    crate::child::child_main(ctx, worker_main)
}

fn worker_state_type() -> &'static str {
    std::any::type_name::<WorkerBoot>()
}

fn not_a_task(input: TaskInput<'_>) {
    push_failure(input.out, "the pool worker is not a task".to_string());
}

inventory::submit! {
    EntryPoint {
        key: WORKER_KEY,
        run: worker_entry,
        task: not_a_task,
        state_type: worker_state_type,
        fn_type: None,
    }
}

/// The worker's loop: runs every chunk it is sent until the pool drops its sender, or until
/// it has run `max_tasks` tasks.
fn worker_main(boot: WorkerBoot) {
    let WorkerBoot {
        tasks,
        results,
        progress,
        initializer,
        max_tasks,
        timed,
    } = boot;
    let mut entries: HashMap<String, Option<&'static EntryPoint>> = HashMap::new();
    if let Some(init) = initializer
        && let Err(message) = run_initializer(init, &mut entries)
    {
        let _ = results.send(FromWorker::InitFailed { message });
        return;
    }
    if results.send(FromWorker::Ready).is_err() {
        return;
    }
    let mut done = 0_u64;
    while let Ok(ToWorker::Chunk {
        k,
        first_seq,
        key,
        items,
    }) = tasks.recv()
    {
        if !progress.take(k) {
            if results.send(FromWorker::Skipped { first_seq }).is_err() {
                return;
            }
            continue;
        }
        let entry = match entries.get(&*key) {
            Some(entry) => *entry,
            None => {
                let entry = registry::find(&key).ok();
                entries.insert(key.to_string(), entry);
                entry
            }
        };
        // An outcome takes about its arguments' room, plus its variant's tag.
        let mut outcomes = Packed::with_capacity(0, items.encoded_len() + items.len());
        let mut items = items.into_entries();
        let mut seq = first_seq;
        let mut retire = false;
        // One encoding context for the chunk's outcomes.
        wire::in_batch(|| {
            while let Some((args, fds)) = items.next_entry() {
                progress.start(seq, timed);
                let input = TaskInput {
                    args,
                    fds,
                    out: &mut outcomes,
                };
                match entry {
                    Some(entry) => (entry.task)(input),
                    None => push_failure(
                        input.out,
                        format!("no `#[multiproc::process]` entry point `{key}` in the worker"),
                    ),
                }
                progress.finish();
                seq += 1;
                done += 1;
                if max_tasks.is_some_and(|max| done >= max) {
                    retire = true;
                    break;
                }
            }
        });
        if results
            .send(FromWorker::Done {
                first_seq,
                outcomes,
            })
            .is_err()
            || retire
        {
            return;
        }
    }
}

/// Runs the pool's initializer; the error text if it did not return.
fn run_initializer(
    init: InitCall,
    entries: &mut HashMap<String, Option<&'static EntryPoint>>,
) -> Result<(), String> {
    let Some(entry) = *entries
        .entry(init.key.clone())
        .or_insert_with(|| registry::find(&init.key).ok())
    else {
        return Err(format!(
            "no `#[multiproc::process]` entry point `{}` in the worker",
            init.key
        ));
    };
    let mut out = Packed::new();
    let mut args = init.args.into_entries();
    let Some((bytes, fds)) = args.next_entry() else {
        return Err("the initializer's arguments are missing".to_string());
    };
    (entry.task)(TaskInput {
        args: bytes,
        fds,
        out: &mut out,
    });
    let mut outcomes = out.into_entries();
    let Some((bytes, fds)) = outcomes.next_entry() else {
        return Err("the initializer left no outcome".to_string());
    };
    match wire::decode_slice::<Outcome<()>>(bytes, fds) {
        Ok(Outcome::Returned(_)) => Ok(()),
        Ok(Outcome::Panicked(panic)) => Err(format!("the initializer panicked: {panic}")),
        Ok(Outcome::OutputNotSerializable { message, .. })
        | Ok(Outcome::StateNotDeserializable { message, .. }) => {
            Err(format!("the initializer failed: {message}"))
        }
        Err(message) => Err(format!(
            "the initializer's outcome is unreadable: {message}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_taken_by_the_worker_or_revoked_by_the_pool_never_both() {
        let p = Progress::new().unwrap();
        p.queue(0);
        assert!(p.take(0));
        assert!(!p.revoke(0), "the worker won");
        p.queue(1);
        assert!(p.revoke(1));
        assert!(!p.take(1), "the pool won");
        // Chunk 2 reuses chunk 0's word; a stale number matches nothing.
        p.queue(2);
        assert!(!p.take(0) && !p.revoke(0));
        assert!(p.take(2));
        // A chunk that was not sent after all is neither taken nor revoked.
        p.queue(3);
        p.unqueue(3);
        assert!(!p.take(3) && !p.revoke(3));
    }

    #[test]
    fn the_running_task_is_seen_through_a_copy_of_the_region() {
        let p = Progress::new().unwrap();
        assert_eq!(p.current(), None);
        let copy = Progress(Arc::new(
            Region::from_fd(p.0.fd().try_clone_to_owned().unwrap(), 32).unwrap(),
        ));
        copy.start(41, true);
        let (seq, started) = p.current().unwrap();
        assert_eq!(seq, 41);
        assert!(started > 0 && started <= monotonic_ns());
        copy.finish();
        assert_eq!(p.current(), None);
    }
}
