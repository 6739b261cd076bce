//! The registry of entry points: every `#[multiproc::process]` item submits one
//! [`EntryPoint`] through `inventory`, keyed by its module path and name.

use crate::bootstrap::ChildContext;
use crate::error::{Error, Repr, Result};

/// One spawnable entry point, registered by the `#[multiproc::process]` expansion.
#[doc(hidden)]
pub struct EntryPoint {
    /// `module_path!()` + `::` + the fn or type name.
    pub key: &'static str,
    /// Runs the entry in the child: receives the state, runs it, sends the outcome, exits.
    pub run: fn(ChildContext) -> !,
    /// `type_name` of the state (the argument tuple, for a fn), to check a resolved fn.
    pub state_type: fn() -> &'static str,
}

inventory::collect!(EntryPoint);

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
        if entry.key == key {
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

fn duplicate(key: &str, n: usize) -> Error {
    Error::other(format!(
        "{n} entry points are registered as `{key}` (same name in one module, in different \
         function bodies?): rename all but one"
    ))
}

/// The key of the `#[process]` fn whose type is named `fn_type` and takes `args_type`.
///
/// A fn item's `type_name` is its path, `crate::module::name`, which is also its key; a fn
/// declared inside another fn's body has that fn in its path (`crate::module::outer::name`)
/// but not in `module_path!()`, so it is matched by module prefix and name.
pub(crate) fn resolve_fn(fn_type: &'static str, args_type: &str) -> Result<&'static str> {
    if fn_type.contains("{{closure}}") {
        return Err(Error::other(format!(
            "`{fn_type}` is a closure: a child process cannot find a closure by name; move \
             the code into a function marked `#[multiproc::process]`"
        )));
    }
    if fn_type.starts_with("fn(") || fn_type.starts_with("unsafe fn(") {
        return Err(Error::other(format!(
            "a function pointer (`{fn_type}`) cannot be spawned: a child process finds its \
             function by name; pass the `#[multiproc::process]` function itself"
        )));
    }
    match find(fn_type) {
        Ok(entry) => return check_args(entry, fn_type, args_type),
        Err(Lookup::Duplicate(n)) => return Err(duplicate(fn_type, n)),
        Err(Lookup::Missing) => {}
    }
    let name = last_segment(fn_type);
    let nested: Vec<&'static EntryPoint> = inventory::iter::<EntryPoint>()
        .filter(|e| {
            last_segment(e.key) == name
                && module_of(e.key).is_some_and(|m| fn_type.starts_with(&format!("{m}::")))
                && (e.state_type)() == args_type
        })
        .collect();
    match nested[..] {
        [entry] => Ok(entry.key),
        [] => Err(Error::new(Repr::EntryNotFound {
            key: fn_type.to_string(),
            known: similar(fn_type),
        })),
        _ => Err(duplicate(fn_type, nested.len())),
    }
}

fn check_args(entry: &'static EntryPoint, fn_type: &str, args_type: &str) -> Result<&'static str> {
    if (entry.state_type)() == args_type {
        Ok(entry.key)
    } else {
        Err(Error::other(format!(
            "the `#[multiproc::process]` entry `{}` takes `{}`, but `{fn_type}` was given \
             `{args_type}`",
            entry.key,
            (entry.state_type)()
        )))
    }
}

/// `"a::b::clock"` -> `Some("a::b")`.
fn module_of(key: &str) -> Option<&str> {
    key.rsplit_once("::").map(|(m, _)| m.trim())
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

    fn unit() -> &'static str {
        "()"
    }

    #[test]
    fn lookup_is_exact_and_detects_duplicates() {
        let entries = [
            EntryPoint {
                key: "app::clock",
                run: never,
                state_type: unit,
            },
            EntryPoint {
                key: "app::inner::clock",
                run: never,
                state_type: unit,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
                state_type: unit,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
                state_type: unit,
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
        assert_eq!(module_of("a::b::clock"), Some("a::b"));
        assert_eq!(module_of("clock"), None);
    }
}
