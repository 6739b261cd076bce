//! What a pool call gives back: results in order ([`Imap`]), as they finish
//! ([`ImapUnordered`]), one at a time ([`AsyncResult`], also a future), and the decoding of
//! a worker's delivery into them.

use std::any::type_name;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::scheduler::{Done, Results};
use crate::error::{Error, Repr, Result};
use crate::ipc::codec as wire;
use crate::proto::Outcome;

/// Decodes a delivery: hands `each` every task's index and result.
pub(crate) fn settle<R: DeserializeOwned>(done: Done, mut each: impl FnMut(usize, Result<R>)) {
    match done {
        Done::Failed { index, error } => each(index, Err(error)),
        Done::Outcomes {
            indices,
            outcomes,
            who,
        } => {
            // Most deliveries carry no descriptor: their values decode without a context, the
            // check made once for all (a 200k map decodes 200k outcomes).
            let plain = !outcomes.carries_fds() && wire::plain_decoding();
            let mut entries = outcomes.into_entries();
            for &index in indices.as_slice() {
                let result = match entries.next_entry() {
                    Some((bytes, _)) if plain => match wire::decode_plain(bytes) {
                        Some(Outcome::Returned(value)) => Ok(value),
                        // A panic, an error, or bytes that do not decode: the full path says.
                        _ => outcome(bytes, Vec::new(), &who),
                    },
                    Some((bytes, fds)) => outcome(bytes, fds, &who),
                    None => Err(lost()),
                };
                each(index, result);
            }
        }
    }
}

/// The result of the one task of a delivery.
pub(crate) fn settle_one<R: DeserializeOwned>(done: Done) -> Result<R> {
    let mut result = None;
    settle(done, |_, r| result = Some(r));
    result.unwrap_or_else(|| Err(lost()))
}

/// One task's encoded outcome, decoded.
fn outcome<R: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    who: &crate::error::Who,
) -> Result<R> {
    let decoded = wire::decode_slice::<Outcome<R>>(bytes, fds).map_err(|message| {
        Error::new(Repr::Deserialize {
            type_name: type_name::<R>(),
            message,
        })
    })?;
    match decoded {
        Outcome::Returned(value) => Ok(value),
        Outcome::Panicked(panic) => Err(Error::new(Repr::Panicked {
            who: who.clone(),
            panic,
        })),
        Outcome::OutputNotSerializable { message, .. } => Err(Error::serialize::<R>(message)),
        Outcome::StateNotDeserializable { type_name, message } => Err(Error::other(format!(
            "{who} could not decode a task's arguments `{type_name}`: {message}"
        ))),
    }
}

/// The error for a task whose outcome can no longer arrive.
fn lost() -> Error {
    Error::other("the pool's scheduler stopped before delivering this task's result")
}

/// Every result of a call, in input order, or the first error in that order (a failed task's,
/// or [`lost`] for one whose outcome never came).
///
/// Outcomes arrive a chunk at a time, mostly in order: each value goes straight to its place
/// at the end of the values once those before it are there; one that arrives early waits in
/// a window that starts there. So a call makes no slot per task (a 200k map used to touch
/// 200k `Option<R>` before its values), only the window its out-of-order chunks need and one
/// bit per task that says whether its outcome came.
pub(crate) fn collect_in_order<R: DeserializeOwned>(rx: Results, n: usize) -> Result<Vec<R>> {
    let mut values: Vec<R> = Vec::with_capacity(n);
    // `ahead[k]`: the value of task `values.len() + k`, once it came.
    let mut ahead: VecDeque<Option<R>> = VecDeque::new();
    let mut came = vec![0_u64; n.div_ceil(64)];
    let mut first_error: Option<(usize, Error)> = None;
    let mut got = 0;
    while got < n {
        let Ok(done) = rx.recv() else {
            break;
        };
        settle(done, |index, result| {
            let (word, bit) = (index / 64, 1 << (index % 64));
            match came.get_mut(word) {
                Some(w) if *w & bit == 0 && index < n => *w |= bit,
                _ => return,
            }
            got += 1;
            // Past the earliest error, nothing is returned.
            let bound = first_error.as_ref().map_or(n, |&(i, _)| i);
            if index >= bound {
                return;
            }
            // Every task before `values.len()` came, this one did not: it is at or after.
            let at = index - values.len();
            match result {
                Err(error) => {
                    ahead.truncate(at);
                    first_error = Some((index, error));
                }
                // The next value, none early (the common case): straight to the end.
                Ok(value) if at == 0 && ahead.is_empty() => values.push(value),
                Ok(value) => {
                    if at < ahead.len() {
                        ahead[at] = Some(value);
                    } else {
                        ahead.resize_with(at, || None);
                        ahead.push_back(Some(value));
                    }
                    while let Some(Some(_)) = ahead.front() {
                        values.extend(ahead.pop_front().flatten());
                    }
                }
            }
        });
    }
    if values.len() == n {
        return Ok(values);
    }
    Err(match first_error {
        Some((i, error)) if i == values.len() => error,
        _ => lost(),
    })
}

/// The results of [`Pool::imap`](crate::Pool::imap), in input order.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = multiproc::Pool::new(2)?;
///     let mut results = pool.imap(double, 1..=3)?;
///     assert_eq!(results.len(), 3); // known before any task is done
///     assert_eq!(results.next().transpose()?, Some(2));
///     assert_eq!(results.len(), 2);
///     Ok(())
/// }
/// ```
pub struct Imap<R> {
    pub(super) rx: Results,
    pub(super) len: usize,
    pub(super) next: usize,
    pub(super) early: HashMap<usize, Result<R>>,
}

impl<R> Imap<R> {
    /// The results of `len` tasks that arrive on `rx`.
    pub(crate) fn new(rx: Results, len: usize) -> Self {
        Imap {
            rx,
            len,
            next: 0,
            early: HashMap::new(),
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.next == self.len {
            return None;
        }
        let index = self.next;
        self.next += 1;
        loop {
            if let Some(result) = self.early.remove(&index) {
                return Some(result);
            }
            match self.rx.recv() {
                Ok(done) => settle(done, |i, result| {
                    self.early.insert(i, result);
                }),
                Err(_) => return Some(Err(lost())),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for Imap<R> {}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imap({} of {} left)", self.len - self.next, self.len)
    }
}

/// The results of [`Pool::imap_unordered`](crate::Pool::imap_unordered), each with its task's index, as they finish.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = multiproc::Pool::new(2)?;
///     let inputs = [10, 20, 30];
///     let mut outputs = vec![0; inputs.len()];
///     for (i, result) in pool.imap_unordered(double, inputs)? {
///         outputs[i] = result?; // the index says where it belongs
///     }
///     assert_eq!(outputs, [20, 40, 60]);
///     Ok(())
/// }
/// ```
pub struct ImapUnordered<R> {
    pub(super) rx: Results,
    pub(super) left: usize,
    pub(super) ready: std::collections::VecDeque<(usize, Result<R>)>,
}

impl<R> ImapUnordered<R> {
    /// The results of `left` tasks that arrive on `rx`, as they arrive.
    pub(crate) fn new(rx: Results, left: usize) -> Self {
        ImapUnordered {
            rx,
            left,
            ready: std::collections::VecDeque::new(),
        }
    }
}

impl<R: DeserializeOwned> Iterator for ImapUnordered<R> {
    type Item = (usize, Result<R>);

    fn next(&mut self) -> Option<(usize, Result<R>)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            match self.rx.recv() {
                Ok(done) => settle(done, |index, result| self.ready.push_back((index, result))),
                Err(_) => {
                    self.left = 0;
                    return Some((usize::MAX, Err(lost())));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for ImapUnordered<R> {}

impl<R> fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImapUnordered({} left)", self.left)
    }
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) or [`Pool::submit`](crate::Pool::submit), once its task is done.
/// [`Pool::apply_async`](crate::Pool::apply_async)'s example shows it in use.
pub struct AsyncResult<R> {
    rx: Results,
    done: Option<Result<R>>,
    taken: bool,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(rx: Results) -> Self {
        AsyncResult {
            rx,
            done: None,
            taken: false,
        }
    }

    /// Waits for the task and returns its result.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn check(n: i32) -> i32 {
    ///     assert!(n >= 0, "negative input");
    ///     n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let (good, bad) = (pool.apply_async(check, (1,))?, pool.apply_async(check, (-1,))?);
    ///     assert_eq!(good.get()?, 1);
    ///     assert_eq!(bad.get().unwrap_err().kind(), multiproc::ErrorKind::Panicked);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The task's failure: its panic, its worker's death, its timeout, the pool's end.
    pub fn get(mut self) -> Result<R> {
        self.wait();
        self.take()
    }

    /// Waits at most `timeout` for the task; after a timeout the result can still be had.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn slow() -> u8 {
    ///     std::thread::sleep(Duration::from_millis(200));
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(slow, ())?;
    ///     assert!(r.get_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    ///     assert_eq!(r.get_timeout(Duration::from_secs(30))?, 1);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](AsyncResult::get), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout);
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) once the result was taken.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        if !self.wait_timeout(timeout) {
            return Err(Error::new(Repr::Timeout {
                what: format!("waiting for a task returning {}", type_name::<R>()),
                after: timeout,
            }));
        }
        self.take()
    }

    /// `true` once the task is done (its result waits here).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn one() -> u8 {
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(one, ())?;
    ///     while !r.ready() {
    ///         std::thread::sleep(std::time::Duration::from_millis(1)); // other work here
    ///     }
    ///     assert_eq!(r.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn ready(&mut self) -> bool {
        self.wait_timeout(Duration::ZERO)
    }

    /// Waits until the task is done.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn one() -> u8 {
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(one, ())?;
    ///     r.wait();
    ///     assert!(r.ready());
    ///     assert_eq!(r.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn wait(&mut self) {
        while !self.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// Waits at most `timeout` until the task is done; `true` if it is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn slow() -> u8 {
    ///     std::thread::sleep(Duration::from_millis(200));
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(slow, ())?;
    ///     assert!(!r.wait_timeout(Duration::from_millis(1)));
    ///     assert!(r.wait_timeout(Duration::from_secs(30)));
    ///     assert_eq!(r.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        if self.done.is_some() || self.taken {
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(done) => {
                settle(done, |_, result| self.done = Some(result));
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.done = Some(Err(lost()));
                true
            }
        }
    }

    fn take(&mut self) -> Result<R> {
        match self.done.take() {
            Some(result) => {
                self.taken = true;
                result
            }
            None => Err(Error::other("this task's result was already taken")),
        }
    }
}

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) would, without blocking the
/// executor's thread (any executor: the pool's scheduler wakes the task).
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[tokio::main]
/// async fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let (a, b) = (pool.apply_async(square, (3,))?, pool.apply_async(square, (4,))?);
///     assert_eq!(a.await? + b.await?, 25);
///     Ok(())
/// }
/// ```
// Never pinned structurally: the result is only moved out whole.
impl<R> Unpin for AsyncResult<R> {}

impl<R: DeserializeOwned> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = self.get_mut();
        if this.ready() {
            return Poll::Ready(this.take());
        }
        this.rx.wake_on_next(cx.waker());
        // The outcome may have come before the waker was in place.
        if this.ready() {
            return Poll::Ready(this.take());
        }
        Poll::Pending
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("done", &self.done.is_some())
            .field("taken", &self.taken)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::packed::Packed;
    use crate::pool::scheduler::{Indices, sink};

    /// A delivery of `values` as the outcomes of the tasks at `indices`.
    fn returned(indices: Vec<usize>, values: &[u64]) -> Done {
        let mut outcomes = Packed::new();
        for value in values {
            outcomes.push_encoded(&Outcome::Returned(*value)).unwrap();
        }
        Done::Outcomes {
            indices: Indices::Many(indices),
            outcomes,
            who: std::sync::Arc::new(crate::error::Who {
                name: "worker".into(),
                pid: None,
            }),
        }
    }

    fn failed(index: usize, text: &str) -> Done {
        Done::Failed {
            index,
            error: Error::other(text),
        }
    }

    #[test]
    fn results_come_back_in_input_order_whatever_order_they_arrive_in() {
        let (tx, rx) = sink();
        tx.send(returned(vec![2, 3], &[12, 13])).unwrap();
        tx.send(returned(vec![0, 1], &[10, 11])).unwrap();
        assert_eq!(collect_in_order::<u64>(rx, 4).unwrap(), [10, 11, 12, 13]);
    }

    #[test]
    fn outcomes_in_any_order_and_repeated_give_each_value_once_in_order() {
        // Deliveries of 1 to 7 tasks covering 0..60, in orders from a fixed pseudo-random
        // sequence, every third one sent twice (a repeat counts once).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let mut runs = Vec::new();
            let mut start = 0;
            while start < 60 {
                let len = (1 + next() % 7).min(60 - start);
                runs.push(start as usize..(start + len) as usize);
                start += len;
            }
            for i in (1..runs.len()).rev() {
                runs.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let (tx, rx) = sink();
            for (k, run) in runs.iter().enumerate() {
                let values: Vec<u64> = run.clone().map(|i| 10 + i as u64).collect();
                tx.send(returned(run.clone().collect(), &values)).unwrap();
                if k % 3 == 0 {
                    tx.send(returned(run.clone().collect(), &values)).unwrap();
                }
            }
            let expected: Vec<u64> = (10..70).collect();
            assert_eq!(collect_in_order::<u64>(rx, 60).unwrap(), expected);
        }
    }

    #[test]
    fn an_earlier_error_wins_over_a_later_one_and_over_the_values_after_it() {
        let (tx, rx) = sink();
        tx.send(returned(vec![4, 5], &[14, 15])).unwrap();
        tx.send(failed(3, "three")).unwrap();
        tx.send(returned(vec![0, 1], &[10, 11])).unwrap();
        tx.send(failed(2, "two")).unwrap();
        tx.send(failed(2, "two again")).unwrap();
        let error = collect_in_order::<u64>(rx, 6).unwrap_err();
        assert!(error.to_string().contains("two") && !error.to_string().contains("again"));
    }

    #[test]
    fn a_delivery_without_descriptors_still_reports_failures_and_bad_bytes() {
        // Returned, a failure the worker reported, and bytes that are no `Outcome<u64>`.
        let mut outcomes = Packed::new();
        outcomes.push_encoded(&Outcome::Returned(7_u64)).unwrap();
        let failure = Outcome::<u64>::OutputNotSerializable {
            type_name: "T".into(),
            message: "refused".into(),
        };
        outcomes.push_encoded(&failure).unwrap();
        outcomes.push_owned(&[9, 9, 9], Vec::new());
        let done = Done::Outcomes {
            indices: Indices::Many(vec![0, 1, 2]),
            outcomes,
            who: std::sync::Arc::new(crate::error::Who {
                name: "worker".into(),
                pid: None,
            }),
        };
        let mut got = Vec::new();
        settle::<u64>(done, |index, result| got.push((index, result)));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1.as_ref().ok(), Some(&7));
        let refused = got[1].1.as_ref().unwrap_err();
        assert!(refused.to_string().contains("refused"), "{refused}");
        let garbled = got[2].1.as_ref().unwrap_err();
        assert_eq!(garbled.kind(), crate::ErrorKind::Deserialize, "{garbled}");
    }

    #[test]
    fn the_error_is_the_first_in_input_order_not_the_first_to_arrive() {
        let (tx, rx) = sink();
        tx.send(failed(3, "three")).unwrap();
        tx.send(returned(vec![0], &[10])).unwrap();
        tx.send(failed(1, "one")).unwrap();
        tx.send(returned(vec![2], &[12])).unwrap();
        let error = collect_in_order::<u64>(rx, 4).unwrap_err();
        assert!(error.to_string().contains("one"), "{error}");
    }

    #[test]
    fn a_result_that_never_comes_before_an_error_is_reported_lost() {
        let (tx, rx) = sink();
        tx.send(returned(vec![0], &[10])).unwrap();
        tx.send(failed(2, "two")).unwrap();
        drop(tx);
        let error = collect_in_order::<u64>(rx, 3).unwrap_err();
        assert!(
            error.to_string().contains("stopped before delivering"),
            "{error}"
        );
    }
}
