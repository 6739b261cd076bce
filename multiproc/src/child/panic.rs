//! Catching a child's panic (message and location) so it can be sent to the parent.

use std::any::Any;
use std::cell::RefCell;
use std::panic;
use std::sync::Once;

use crate::error::RemotePanic;

thread_local! {
    /// Where the last panic on this thread happened, as seen by the hook.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that records the location, then runs the previous hook (which prints
/// the usual message on the child's stderr).
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LOCATION.with(|slot| *slot.borrow_mut() = location);
            previous(info);
        }));
    });
}

/// Turns a caught panic payload into a [`RemotePanic`], with the location the hook saw.
pub(crate) fn remote_panic(payload: Box<dyn Any + Send>) -> RemotePanic {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_string()
    };
    let location = LOCATION.with(|slot| slot.borrow_mut().take());
    RemotePanic { message, location }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_messages() {
        assert_eq!(remote_panic(Box::new("static")).message, "static");
        assert_eq!(
            remote_panic(Box::new(String::from("owned"))).message,
            "owned"
        );
        assert_eq!(
            remote_panic(Box::new(42_u8)).message,
            "<non-string payload>"
        );
    }
}
