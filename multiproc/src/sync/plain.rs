//! Plain data in a shared page under the page's lock: [`Value`] and [`Array`], and the core
//! that [`Condition`](super::Condition) shares with them.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{held, map_guard};
use super::{HEADER, LockResult, OwnerDied};
use crate::error::{Error, Result};
use crate::ipc::codec;
use crate::ipc::shm::Region;
use crate::sys::Wait;

/// How many elements the page holds, the size of one, and a hash of their type's name (u64
/// words), so that a page received as another type is refused.
const LEN: usize = 3;
const ELEM: usize = 4;
const TYPE: usize = 5;

/// The most alignment a `T` may ask for: a mapping starts on a page.
const MAX_ALIGN: usize = 4096;

/// `len` values of `T` in a shared page, after a header that starts with the page's lock.
pub(super) struct Shared<T> {
    region: Arc<Region>,
    len: usize,
    _t: PhantomData<T>,
}

/// Where the values start: after the header, aligned for `T`.
fn offset<T>() -> usize {
    HEADER.max(align_of::<T>())
}

/// A stable-within-a-build hash of `T`'s name (FNV-1a).
fn type_hash<T>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

impl<T: Pod> Shared<T> {
    /// A new page holding a copy of `values`.
    pub(super) fn new(what: &str, values: &[T]) -> Result<Shared<T>> {
        if align_of::<T>() > MAX_ALIGN {
            return Err(Error::other(format!(
                "a shared {what} holds types aligned to at most {MAX_ALIGN} bytes; {} asks for {}",
                std::any::type_name::<T>(),
                align_of::<T>()
            )));
        }
        let bytes: &[u8] = bytemuck::cast_slice(values);
        let mut page = vec![0_u8; offset::<T>() + bytes.len()];
        page[offset::<T>()..].copy_from_slice(bytes);
        let region = Region::with_bytes(&format!("multiproc-{what}"), &page)
            .map_err(|e| Error::io(format!("cannot create a shared {what}'s memory"), e))?;
        region.word64(LEN).store(values.len() as u64, SeqCst);
        region.word64(ELEM).store(size_of::<T>() as u64, SeqCst);
        region.word64(TYPE).store(type_hash::<T>(), SeqCst);
        Ok(Shared {
            region: Arc::new(region),
            len: values.len(),
            _t: PhantomData,
        })
    }

    /// A page received as a `what` of `T`: refused unless it was made for `T` and holds the
    /// values its header says (exactly one when `single`: a `Value`'s or a `Condition`'s).
    fn received(
        region: Region,
        what: &str,
        single: bool,
    ) -> std::result::Result<Shared<T>, String> {
        let len = region.word64(LEN).load(SeqCst);
        let elem = region.word64(ELEM).load(SeqCst);
        let name = std::any::type_name::<T>();
        if elem != size_of::<T>() as u64 || region.word64(TYPE).load(SeqCst) != type_hash::<T>() {
            return Err(format!(
                "a shared {what} received as one of {name} was made for another type"
            ));
        }
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        if single && len != 1 {
            return Err(format!(
                "a shared {what} of {name} received holds {len} values, not one (an Array?)"
            ));
        }
        let fits = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(offset::<T>()))
            .is_some_and(|end| end <= region.len());
        if !fits {
            return Err(format!(
                "a shared {what} of {name} does not hold the {len} values it says"
            ));
        }
        Ok(Shared {
            region: Arc::new(region),
            len,
            _t: PhantomData,
        })
    }

    pub(super) fn region(&self) -> &Region {
        &self.region
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Takes the page's lock within `wait`.
    pub(super) fn lock(&self, wait: Wait) -> Option<LockResult<SharedGuard<'_, T>>> {
        let taken = super::lock(&self.region, wait)?;
        Some(held(taken, || SharedGuard { shared: self }))
    }

    /// Takes the page's lock, waiting as long as it takes.
    pub(super) fn lock_forever(&self) -> LockResult<SharedGuard<'_, T>> {
        super::forever(|wait| self.lock(wait))
    }

    pub(super) fn serialize<S: Serializer>(
        &self,
        what: &'static str,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        super::send_page(&self.region, what, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        what: &'static str,
        single: bool,
    ) -> std::result::Result<Shared<T>, D::Error> {
        let region = super::receive_page(d, what, HEADER)?;
        Shared::received(region, what, single).map_err(codec::de_error)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            region: Arc::clone(&self.region),
            len: self.len,
            _t: PhantomData,
        }
    }
}

/// The page's lock held, and so its values: released when dropped.
pub(super) struct SharedGuard<'a, T> {
    shared: &'a Shared<T>,
}

impl<'a, T> SharedGuard<'a, T> {
    pub(super) fn shared(&self) -> &'a Shared<T> {
        self.shared
    }
}

impl<T> Deref for SharedGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        let shared = self.shared;
        // SAFETY: the page holds `len` values of T from `offset::<T>()` (checked when made or
        // received), aligned for T (a mapping starts on a page; align_of::<T>() <= 4096);
        // every bit pattern is a T (Pod), so whatever another process wrote, even half, is
        // one; and this guard holds the page's lock, which every access takes, so no one
        // writes them while this borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                shared.region.as_ptr().add(offset::<T>()).cast::<T>(),
                shared.len,
            )
        }
    }
}

impl<T> DerefMut for SharedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let shared = self.shared;
        // SAFETY: as in `deref`; the lock is this guard's alone, and `&mut self` makes this
        // borrow the only one through it.
        unsafe {
            std::slice::from_raw_parts_mut(
                shared.region.as_ptr().add(offset::<T>()).cast::<T>(),
                shared.len,
            )
        }
    }
}

impl<T> Drop for SharedGuard<'_, T> {
    fn drop(&mut self) {
        super::unlock(&self.shared.region);
    }
}

/// One value of plain data that processes share, under a lock: Python's
/// `multiprocessing.Value` (whose `get_lock()` is this type's [`lock`](Value::lock)).
///
/// `T` is any [`bytemuck::Pod`] type: numbers, arrays of them, `#[repr(C)]` structs that
/// derive `Pod`. A holder that dies does not keep the lock: the next [`lock`](Value::lock)
/// returns [`OwnerDied`] with the guard, and the value is whatever it left (a valid `T`,
/// since every bit pattern is one).
/// Not reentrant: [`get`](Value::get) or [`set`](Value::set) while this thread holds the
/// guard waits for itself, as with std's `Mutex`.
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Value;
///
/// #[multiproc::process]
/// fn count(total: Value<u64>, times: u64) {
///     for _ in 0..times {
///         *total.lock().unwrap_or_else(|died| died.into_guard()) += 1;
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let total = Value::new(0_u64)?;
///     let children = (0..4)
///         .map(|_| multiproc::spawn(count, (total.clone(), 1000)))
///         .collect::<multiproc::Result<Vec<_>>>()?;
///     for child in children {
///         child.join()?;
///     }
///     assert_eq!(total.get(), 4000);
///     Ok(())
/// }
/// ```
pub struct Value<T>(Shared<T>);

/// The lock of a [`Value`] held, giving its value; released when dropped.
/// [`Value`]'s example shows it in use.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ValueGuard<'a, T>(SharedGuard<'a, T>);

impl<T: Pod> Value<T> {
    /// A new shared value.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let total = multiproc::sync::Value::new(0_u64)?;
    /// let copy = total.clone(); // the same value, as a copy in another process would be
    /// copy.set(5);
    /// assert_eq!(total.get(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made;
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for a `T` aligned to more than 4096.
    pub fn new(value: T) -> Result<Value<T>> {
        Shared::new("Value", &[value]).map(Value)
    }

    /// Takes the value's lock, waiting as long as it takes; [`OwnerDied`] (with the guard)
    /// if its holder died holding it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let total = multiproc::sync::Value::new(10_u32)?;
    /// {
    ///     let mut held = total.lock().unwrap_or_else(|died| died.into_guard());
    ///     *held += 5; // read and written under one lock: no update lost
    /// }
    /// assert_eq!(total.get(), 15);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`], which holds the guard.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        map_guard(self.0.lock_forever(), ValueGuard)
    }

    /// Takes the value's lock, waiting at most `timeout`; `None` if it stayed held that long.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let total = multiproc::sync::Value::new(0_u32)?;
    /// let _held = total.lock();
    /// assert!(total.lock_timeout(Duration::from_millis(10)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockResult<ValueGuard<'_, T>>> {
        self.0
            .lock(Wait::timeout(timeout))
            .map(|taken| map_guard(taken, ValueGuard))
    }

    /// A copy of the value, read under its lock (Python's `value.value`). A lock taken over
    /// from a dead holder is not reported here: use [`lock`](Value::lock) to know.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let ratio = multiproc::sync::Value::new(0.5_f64)?;
    /// assert_eq!(ratio.get(), 0.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> T {
        *self.lock().unwrap_or_else(OwnerDied::into_guard)
    }

    /// Replaces the value under its lock (Python's `value.value = ...`). A lock taken over
    /// from a dead holder is not reported here: use [`lock`](Value::lock) to know.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let ratio = multiproc::sync::Value::new(0.5_f64)?;
    /// ratio.set(0.75);
    /// assert_eq!(ratio.get(), 0.75);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        *self.lock().unwrap_or_else(OwnerDied::into_guard) = value;
    }
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value(self.0.clone())
    }
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0[0]
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0[0]
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock_timeout(Duration::ZERO) {
            Some(held) => {
                let held = held.unwrap_or_else(OwnerDied::into_guard);
                f.debug_tuple("Value").field(&*held).finish()
            }
            None => f.write_str("Value(<locked>)"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize("Value", s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Shared::deserialize(d, "Value", true).map(Value)
    }
}

/// A fixed number of values of plain data that processes share, under one lock: Python's
/// `multiprocessing.Array`. The guard is a `[T]`.
///
/// `T` is any [`bytemuck::Pod`] type, as for [`Value`]; a holder that dies does not keep
/// the lock ([`OwnerDied`]).
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Array;
///
/// #[multiproc::process]
/// fn square(cells: Array<u32>, i: usize) {
///     let mut cells = cells.lock().unwrap_or_else(|died| died.into_guard());
///     cells[i] *= cells[i];
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let cells = Array::from_slice(&[1_u32, 2, 3, 4])?;
///     let children = (0..cells.len())
///         .map(|i| multiproc::spawn(square, (cells.clone(), i)))
///         .collect::<multiproc::Result<Vec<_>>>()?;
///     for child in children {
///         child.join()?;
///     }
///     assert_eq!(cells.to_vec(), [1, 4, 9, 16]);
///     Ok(())
/// }
/// ```
pub struct Array<T>(Shared<T>);

/// The lock of an [`Array`] held, giving its values as a `[T]`; released when dropped.
/// [`Array`]'s example shows it in use.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ArrayGuard<'a, T>(SharedGuard<'a, T>);

impl<T: Pod> Array<T> {
    /// A new shared array holding a copy of `values`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cells = multiproc::sync::Array::from_slice(&[1_u32, 2, 3])?;
    /// assert_eq!(cells.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared memory cannot be made;
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for a `T` aligned to more than 4096.
    pub fn from_slice(values: &[T]) -> Result<Array<T>> {
        Shared::new("Array", values).map(Array)
    }

    /// A new shared array of `len` zeroed values (Python's `Array('i', 10)`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let counts = multiproc::sync::Array::<u64>::zeroed(8)?;
    /// assert_eq!(counts.to_vec(), [0; 8]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_slice`](Array::from_slice).
    pub fn zeroed(len: usize) -> Result<Array<T>> {
        Array::from_slice(&vec![T::zeroed(); len])
    }

    /// How many values it holds.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cells = multiproc::sync::Array::<u16>::zeroed(5)?;
    /// assert_eq!(cells.len(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no values.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// assert!(multiproc::sync::Array::<u8>::zeroed(0)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Takes the array's lock, waiting as long as it takes; [`OwnerDied`] (with the guard)
    /// if its holder died holding it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cells = multiproc::sync::Array::from_slice(&[3_u32, 1, 2])?;
    /// // The guard is a `[T]`: slice methods work on it under the lock.
    /// cells.lock().unwrap_or_else(|died| died.into_guard()).sort();
    /// assert_eq!(cells.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`], which holds the guard.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        map_guard(self.0.lock_forever(), ArrayGuard)
    }

    /// Takes the array's lock, waiting at most `timeout`; `None` if it stayed held that long.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let cells = multiproc::sync::Array::<u8>::zeroed(4)?;
    /// let _held = cells.lock();
    /// assert!(cells.lock_timeout(Duration::from_millis(10)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockResult<ArrayGuard<'_, T>>> {
        self.0
            .lock(Wait::timeout(timeout))
            .map(|taken| map_guard(taken, ArrayGuard))
    }

    /// A copy of the values, read under the lock (Python's `array[:]`). A lock taken over
    /// from a dead holder is not reported here: use [`lock`](Array::lock) to know.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cells = multiproc::sync::Array::from_slice(&[1.5_f32, 2.5])?;
    /// let copy: Vec<f32> = cells.to_vec();
    /// assert_eq!(copy, [1.5, 2.5]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().unwrap_or_else(OwnerDied::into_guard).to_vec()
    }
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array(self.0.clone())
    }
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock_timeout(Duration::ZERO) {
            Some(held) => {
                let held = held.unwrap_or_else(OwnerDied::into_guard);
                f.debug_tuple("Array").field(&&*held).finish()
            }
            None => f.write_str("Array(<locked>)"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize("Array", s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Shared::deserialize(d, "Array", false).map(Array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_and_an_array_hold_their_data_under_one_lock() {
        let v = Value::new(41_u64).unwrap();
        *v.lock().unwrap() += 1;
        assert_eq!(v.get(), 42);
        let held = v.lock().unwrap();
        assert!(v.lock_timeout(Duration::from_millis(10)).is_none());
        drop(held);
        let a = Array::from_slice(&[1.5_f64, 2.5]).unwrap();
        a.lock().unwrap()[1] = 3.5;
        assert_eq!(a.to_vec(), [1.5, 3.5]);
        assert_eq!(format!("{a:?}"), "Array([1.5, 3.5])");
        // Aligned beyond the header: the values start on their own alignment.
        #[derive(Clone, Copy)]
        #[repr(C, align(128))]
        struct Wide([u8; 128]);
        // SAFETY: a byte array with no padding (size 128 = align); all zeroes is valid.
        unsafe impl bytemuck::Zeroable for Wide {}
        // SAFETY: as above; every bit pattern is a Wide.
        unsafe impl bytemuck::Pod for Wide {}
        let wide = Array::<Wide>::zeroed(2).unwrap();
        let guard = wide.lock().unwrap();
        assert_eq!(guard.as_ptr() as usize % 128, 0);
    }

    #[test]
    fn a_dead_holder_of_a_values_lock_is_reported_with_the_guard() {
        let v = Value::new([7_u8; 3]).unwrap();
        v.0.region()
            .word64(super::super::OWNER)
            .store(0x7fff_fff0_u64 << 32, SeqCst);
        let died = v.lock().unwrap_err();
        assert_eq!(died.pid(), 0x7fff_fff0);
        assert_eq!(*died.into_guard(), [7, 7, 7]);
    }

    #[test]
    fn a_page_made_for_another_type_is_refused() {
        let v = Value::new(1_u32).unwrap();
        let region =
            Region::from_fd(v.0.region().fd().try_clone_to_owned().unwrap(), HEADER).unwrap();
        let err = Shared::<i32>::received(region, "Value", true)
            .err()
            .unwrap();
        assert!(err.contains("made for another type"), "{err}");
        let empty = Array::<u32>::zeroed(0).unwrap();
        let region =
            Region::from_fd(empty.0.region().fd().try_clone_to_owned().unwrap(), HEADER).unwrap();
        let err = Shared::<u32>::received(region, "Value", true)
            .err()
            .unwrap();
        assert!(err.contains("not one"), "{err}");
    }
}
