//! `tracing` integration (feature `tracing`): events for spawn, exit, restart and pool
//! dispatch, each with the child's name and pid, under the target `multiproc`; and, with
//! [`Builder::forward_tracing`](crate::Builder::forward_tracing), a child's own events
//! re-emitted by its parent's subscriber.
//!
//! Without the feature every function here is empty and inlined away.

#[cfg(feature = "tracing")]
pub(crate) use on::*;

#[cfg(not(feature = "tracing"))]
pub(crate) use off::*;

#[cfg(not(feature = "tracing"))]
mod off {
    #[inline(always)]
    pub(crate) fn spawned(_name: &str, _pid: u32, _zygote: bool) {}
    #[inline(always)]
    pub(crate) fn exited(_name: &str, _pid: u32, _error: Option<&crate::Error>) {}
    pub(crate) fn stopped(_name: &str, _pid: u32) {}
    #[inline(always)]
    pub(crate) fn restarting(_supervisor: &str, _name: &str, _why: &str) {}
    #[inline(always)]
    pub(crate) fn dispatched(_worker: &str, _pid: u32, _tasks: usize) {}
}

#[cfg(feature = "tracing")]
mod on {
    use serde::{Deserialize, Serialize};

    pub(crate) fn spawned(name: &str, pid: u32, zygote: bool) {
        let via = if zygote { "zygote" } else { "exec" };
        tracing::info!(target: "multiproc", child = name, pid, via, "child started");
    }

    /// A child its owner ended on purpose (a pool's worker at the pool's end).
    pub(crate) fn stopped(name: &str, pid: u32) {
        tracing::debug!(target: "multiproc", child = name, pid, "child stopped");
    }

    pub(crate) fn exited(name: &str, pid: u32, error: Option<&crate::Error>) {
        match error {
            None => tracing::info!(target: "multiproc", child = name, pid, "child finished"),
            Some(e) => {
                tracing::warn!(target: "multiproc", child = name, pid, error = %e, "child failed")
            }
        }
    }

    pub(crate) fn restarting(supervisor: &str, name: &str, why: &str) {
        tracing::warn!(target: "multiproc", supervisor, child = name, why, "restarting child");
    }

    pub(crate) fn dispatched(worker: &str, pid: u32, tasks: usize) {
        tracing::debug!(target: "multiproc", child = worker, pid, tasks, "pool dispatch");
    }

    /// One event of a child, as it travels to the parent.
    #[derive(Serialize, Deserialize)]
    pub(crate) struct Forwarded {
        level: u8,
        target: String,
        message: String,
        fields: String,
    }

    /// The child's side: a subscriber that sends every enabled event to the parent.
    pub(crate) fn install_forwarder(tx: crate::Sender<Forwarded>, max_level: u8) {
        let forwarder = Forwarder {
            tx,
            max: level_from(max_level),
            next_span: std::sync::atomic::AtomicU64::new(1),
        };
        // A subscriber the program installed before the hook wins.
        let _ = tracing::subscriber::set_global_default(forwarder);
        // `log` records become events of that subscriber (unless a logger is already set).
        #[cfg(feature = "log")]
        let _ = tracing_log::LogTracer::init();
    }

    /// The parent's most verbose level, for the child's filter.
    pub(crate) fn parent_max_level() -> u8 {
        match tracing::level_filters::LevelFilter::current().into_level() {
            None => 0,
            Some(level) => level_code(level),
        }
    }

    /// The parent's side: re-emits a child's events, in a span naming it, until it exits.
    pub(crate) fn relay(
        name: String,
        pid: u32,
        rx: crate::Receiver<Forwarded>,
    ) -> Option<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("multiproc-trace".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let span = tracing::info_span!(target: "multiproc", "child", child = %name, pid);
                let _entered = span.enter();
                for e in rx {
                    let (target, message, fields) = (e.target, e.message, e.fields);
                    macro_rules! emit {
                        ($level:expr) => {
                            tracing::event!(target: "multiproc::child", $level,
                                child_target = %target, fields = %fields, "{message}")
                        };
                    }
                    match level_from(e.level) {
                        Some(tracing::Level::ERROR) => emit!(tracing::Level::ERROR),
                        Some(tracing::Level::WARN) => emit!(tracing::Level::WARN),
                        Some(tracing::Level::INFO) => emit!(tracing::Level::INFO),
                        Some(tracing::Level::DEBUG) => emit!(tracing::Level::DEBUG),
                        _ => emit!(tracing::Level::TRACE),
                    }
                }
            })
            .ok()
    }

    fn level_code(level: tracing::Level) -> u8 {
        match level {
            tracing::Level::ERROR => 1,
            tracing::Level::WARN => 2,
            tracing::Level::INFO => 3,
            tracing::Level::DEBUG => 4,
            tracing::Level::TRACE => 5,
        }
    }

    fn level_from(code: u8) -> Option<tracing::Level> {
        Some(match code {
            1 => tracing::Level::ERROR,
            2 => tracing::Level::WARN,
            3 => tracing::Level::INFO,
            4 => tracing::Level::DEBUG,
            5 => tracing::Level::TRACE,
            _ => return None,
        })
    }

    struct Forwarder {
        tx: crate::Sender<Forwarded>,
        max: Option<tracing::Level>,
        next_span: std::sync::atomic::AtomicU64,
    }

    /// Collects an event's fields: `message` apart, the rest as `key=value`.
    #[derive(Default)]
    struct Fields {
        message: String,
        rest: String,
    }

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write;
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                if !self.rest.is_empty() {
                    self.rest.push(' ');
                }
                let _ = write!(self.rest, "{}={value:?}", field.name());
            }
        }

        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "message" {
                self.message.push_str(value);
            } else {
                self.record_debug(field, &value);
            }
        }
    }

    impl tracing::Subscriber for Forwarder {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            self.max.is_some_and(|max| *metadata.level() <= max)
        }

        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(match self.max {
                Some(max) => tracing::level_filters::LevelFilter::from_level(max),
                None => tracing::level_filters::LevelFilter::OFF,
            })
        }

        fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            // Spans are not forwarded, only events; each still needs an id.
            let id = self
                .next_span
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::span::Id::from_u64(id)
        }

        fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

        fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let metadata = event.metadata();
            // A parent that is gone or behind loses nothing here: the channel is unbounded,
            // and the child's own output is unaffected.
            let _ = self.tx.send(Forwarded {
                level: level_code(*metadata.level()),
                target: metadata.target().to_string(),
                message: fields.message,
                fields: fields.rest,
            });
        }

        fn enter(&self, _span: &tracing::span::Id) {}

        fn exit(&self, _span: &tracing::span::Id) {}
    }
}
