//! The registry of entry points: every `#[multiproc::process]` item submits one
//! [`EntryPoint`] through `inventory`, keyed by its module path and name.

use crate::bootstrap::ChildContext;

/// One spawnable entry point, registered by the `#[multiproc::process]` expansion.
#[doc(hidden)]
pub struct EntryPoint {
    /// `module_path!()` + `::` + the fn or type name.
    pub key: &'static str,
    /// Runs the entry in the child: receives the state, runs it, sends the outcome, exits.
    pub run: fn(ChildContext) -> !,
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

    #[test]
    fn lookup_is_exact_and_detects_duplicates() {
        let entries = [
            EntryPoint {
                key: "app::clock",
                run: never,
            },
            EntryPoint {
                key: "app::inner::clock",
                run: never,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
            },
            EntryPoint {
                key: "app::twice",
                run: never,
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
