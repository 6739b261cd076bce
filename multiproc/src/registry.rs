//! The registry of entry points: every `#[multiproc::process]` item submits one
//! [`EntryPoint`] through `inventory`, keyed by its module path and name.

use std::os::fd::OwnedFd;

use crate::error::{Error, Repr, Result};
use crate::ipc::packed::Packed;
use crate::proto::ChildContext;

/// One spawnable entry point, registered by the `#[multiproc::process]` expansion.
#[doc(hidden)]
pub struct EntryPoint {
    /// `module_path!()` + `::` + the fn or type name.
    pub key: &'static str,
    /// Runs the entry in the child: receives the state, runs it, sends the outcome, exits.
    pub run: fn(ChildContext) -> !,
    /// Runs the entry as one task of a pool worker: decodes the state, runs it, encodes the
    /// outcome; the worker lives on.
    pub task: fn(TaskInput<'_>),
    /// `type_name` of the state (the argument tuple, for a fn), to check a resolved fn.
    pub state_type: fn() -> &'static str,
    /// For a fn: `type_name` of the fn item, its full path (nested fns included), which is
    /// what `spawn` is given and what the child is asked for.
    pub fn_type: Option<fn() -> &'static str>,
}

inventory::collect!(EntryPoint);

/// What one pool task gets from its worker: its encoded arguments, and where its encoded
/// outcome goes.
///
/// Not a public API: the code `#[multiproc::process]` generates passes it along.
pub struct TaskInput<'a> {
    pub(crate) args: &'a [u8],
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) out: &'a mut Packed,
}

/// Why a key did not resolve to exactly one entry point.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Missing,
    Duplicate(usize),
}

pub(crate) fn find(key: &str) -> Result<&'static EntryPoint, Lookup> {
    find_in(inventory::iter::<EntryPoint>(), key)
}

fn find_in<'a>(
    entries: impl IntoIterator<Item = &'a EntryPoint>,
    key: &str,
) -> Result<&'a EntryPoint, Lookup> {
    let mut found = None;
    let mut count = 0;
    for entry in entries {
        // A fn is asked for by its item's type name (nested fns share `module::name`).
        let matches = match entry.fn_type {
            Some(fn_type) => fn_type() == key,
            None => entry.key == key,
        };
        if matches {
            count += 1;
            found.get_or_insert(entry);
        }
    }
    match (found, count) {
        (Some(entry), 1) => Ok(entry),
        (Some(_), n) => Err(Lookup::Duplicate(n)),
        (None, _) => Err(Lookup::Missing),
    }
}

/// The registered keys that end like `key` (same last segment), to suggest in an error.
pub(crate) fn similar(key: &str) -> Vec<String> {
    let last = last_segment(key);
    let mut keys: Vec<String> = inventory::iter::<EntryPoint>()
        .filter(|e| last_segment(e.key) == last)
        .map(|e| e.key.to_string())
        .collect();
    keys.sort();
    keys
}

/// Checks, in the parent and before any process starts, that `key` names one entry point.
pub(crate) fn resolve_key(key: &'static str) -> Result<&'static str> {
    match find(key) {
        Ok(entry) => Ok(entry.key),
        Err(Lookup::Missing) => Err(Error::new(Repr::EntryNotFound {
            key: key.to_string(),
            known: similar(key),
        })),
        Err(Lookup::Duplicate(n)) => Err(duplicate(key, n)),
    }
}

/// As [`resolve_key`], for a key that arrived from elsewhere (a cluster task): the key as
/// this binary registered it.
#[cfg(feature = "cluster")]
pub(crate) fn resolve_key_str(key: &str) -> Result<&'static str> {
    match find(key) {
        Ok(entry) => Ok(entry.fn_type.map_or(entry.key, |fn_type| fn_type())),
        Err(Lookup::Missing) => Err(Error::new(Repr::EntryNotFound {
            key: key.to_string(),
            known: similar(key),
        })),
        Err(Lookup::Duplicate(n)) => Err(duplicate(key, n)),
    }
}

/// What hosts compare to know that they run compatible builds: a hash of every registered
/// entry point's key and argument type, the same for the same code on any host.
#[cfg(feature = "cluster")]
pub(crate) fn build_id() -> String {
    let mut entries: Vec<String> = inventory::iter::<EntryPoint>()
        .map(|e| {
            format!(
                "{}|{}|{}",
                e.key,
                e.fn_type.map_or("", |f| f()),
                (e.state_type)()
            )
        })
        .collect();
    entries.sort();
    // FNV-1a, 64 bits: stable across hosts and Rust versions (std's hasher is neither).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in entries.join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn duplicate(key: &str, n: usize) -> Error {
    Error::other(format!(
        "{n} entry points are registered as `{key}`: rename all but one"
    ))
}

/// The key of the `#[process]` fn whose item type is named `fn_type` and takes `args_type`.
///
/// The macro registers each fn with the `type_name` of its item, so this is an exact match: a
/// function without the attribute never resolves to another one of the same name.
pub(crate) fn resolve_fn<F, A>() -> Result<&'static str> {
    let (fn_type, args_type) = (std::any::type_name::<F>(), std::any::type_name::<A>());
    match find(fn_type) {
        Ok(entry) if entry.fn_type.is_some() => {
            return check_args(entry, fn_type, args_type).map(|()| fn_type);
        }
        Err(Lookup::Duplicate(n)) => return Err(duplicate(fn_type, n)),
        _ => {}
    }
    if last_segment(fn_type).contains("{{closure}}") {
        return Err(Error::other(format!(
            "`{fn_type}` is a closure: a child process cannot find a closure by name; move \
             the code into a function marked `#[multiproc::process]`"
        )));
    }
    let pointer = ["fn(", "unsafe fn(", "extern ", "unsafe extern ", "&"];
    if pointer.iter().any(|p| fn_type.starts_with(p)) {
        return Err(Error::other(format!(
            "`{fn_type}` is a function pointer or reference: a child process finds its \
             function by name; pass the `#[multiproc::process]` function itself"
        )));
    }
    Err(Error::new(Repr::EntryNotFound {
        key: fn_type.to_string(),
        known: similar(fn_type),
    }))
}

fn check_args(entry: &EntryPoint, fn_type: &str, args_type: &str) -> Result<()> {
    if (entry.state_type)() == args_type {
        Ok(())
    } else {
        Err(Error::other(format!(
            "the `#[multiproc::process]` entry `{}` takes `{}`, but `{fn_type}` was given \
             `{args_type}`",
            entry.key,
            (entry.state_type)()
        )))
    }
}

/// `"a::b::clock"` -> `"clock"`.
pub(crate) fn last_segment(key: &str) -> &str {
    key.rsplit("::").next().unwrap_or(key).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: ChildContext) -> ! {
        unreachable!("not run in unit tests")
    }

    fn no_task(_: TaskInput<'_>) {
        unreachable!("not run in unit tests")
    }

    fn unit() -> &'static str {
        "()"
    }

    #[test]
    fn lookup_is_exact_and_detects_duplicates() {
        let entries = [
            EntryPoint {
                key: "app::clock",
                run: never,
                task: no_task,
                state_type: unit,
                fn_type: None,
            },
            EntryPoint {
                key: "app::inner::clock",
                run: never,
                task: no_task,
                state_type: unit,
                fn_type: None,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
                task: no_task,
                state_type: unit,
                fn_type: None,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
                task: no_task,
                state_type: unit,
                fn_type: None,
            },
        ];
        assert_eq!(find_in(&entries, "app::clock").unwrap().key, "app::clock");
        assert_eq!(find_in(&entries, "clock").err(), Some(Lookup::Missing));
        assert_eq!(
            find_in(&entries, "app::twice").err(),
            Some(Lookup::Duplicate(2))
        );
    }

    #[test]
    fn last_segment_of_keys() {
        assert_eq!(last_segment("a::b::clock"), "clock");
        assert_eq!(last_segment("clock"), "clock");
        assert_eq!(last_segment("a::b :: Clock"), "Clock");
    }
}
