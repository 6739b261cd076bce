//! The `tracing` feature: the parent's subscriber sees spawn, exit, restart and pool dispatch
//! events with the child's name and pid, and, with `forward_tracing`, the child's own events,
//! all out by the time `join` returns.

mod support;

use std::sync::{Mutex, Once};
use std::time::Duration;

use multiproc::{Builder, Pool, Restart, Supervisor};

/// Every event this process's subscriber saw: "target level message fields", and the span
/// it was in.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Collector;

#[derive(Default)]
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

thread_local! {
    static SPANS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl tracing::Subscriber for Collector {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = Line(span.metadata().name().to_string());
        span.record(&mut line);
        let mut names = NAMES.lock().unwrap();
        names.push(line.0);
        tracing::span::Id::from_u64(names.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut line = Line(format!("{} {}", meta.target(), meta.level()));
        event.record(&mut line);
        let span = SPANS
            .with(|s| s.borrow().last().cloned())
            .unwrap_or_default();
        SEEN.lock()
            .unwrap()
            .push(format!("{}  [in {span}]", line.0));
    }
    fn enter(&self, id: &tracing::span::Id) {
        let name = NAMES.lock().unwrap()[id.into_u64() as usize - 1].clone();
        SPANS.with(|s| s.borrow_mut().push(name));
    }
    fn exit(&self, _: &tracing::span::Id) {
        SPANS.with(|s| s.borrow_mut().pop());
    }
}

fn collect() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| tracing::subscriber::set_global_default(Collector).unwrap());
}

fn seen_with(needle: &str) -> Vec<String> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

// ANCHOR: forward
#[multiproc::process]
fn chatty(n: u32) -> u32 {
    tracing::info!(answer = n, "hello from the child");
    tracing::debug!("a detail");
    n
}

/// Runs `chatty` in a child whose events this process's subscriber receives; returns its
/// result and pid.
fn chatty_forwarded(n: u32) -> (u32, u32) {
    let child = Builder::new()
        .name("chatty-1")
        .forward_tracing(true)
        .spawn_fn(chatty, (n,))
        .unwrap();
    let pid = child.pid();
    (support::join(child).unwrap(), pid)
}
// ANCHOR_END: forward

#[multiproc::test]
fn spawn_exit_and_forwarded_child_events_reach_the_parent() {
    collect();
    let (answer, pid) = chatty_forwarded(42);
    assert_eq!(answer, 42);

    let started = seen_with("child started");
    assert!(
        started
            .iter()
            .any(|l| l.contains("child=\"chatty-1\"") && l.contains(&format!("pid={pid}"))),
        "{started:?}"
    );
    let finished = seen_with("child finished");
    assert!(
        finished.iter().any(|l| l.contains("chatty-1")),
        "{finished:?}"
    );
    // The child's own events, re-emitted here, in a span that names it.
    let forwarded = seen_with("hello from the child");
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    let line = &forwarded[0];
    assert!(line.starts_with("multiproc::child INFO"), "{line}");
    assert!(line.contains("answer=42"), "{line}");
    assert!(
        line.contains(&format!("child child=chatty-1 pid={pid}")),
        "{line}"
    );
    assert_eq!(seen_with("a detail").len(), 1);
}

#[multiproc::test]
fn without_forwarding_the_child_keeps_its_events() {
    collect();
    let child = Builder::new()
        .name("quiet-1")
        .spawn_fn(chatty, (7,))
        .unwrap();
    assert_eq!(support::join(child).unwrap(), 7);
    assert!(
        seen_with("child finished")
            .iter()
            .any(|l| l.contains("quiet-1"))
    );
    assert!(
        seen_with("answer=7").is_empty(),
        "not forwarded unless asked"
    );
}

/// Fails on its first run; later runs say they are up, then wait to be stopped.
#[derive(serde::Serialize, serde::Deserialize)]
struct FailsOnce {
    marker: String,
    up: multiproc::Sender<()>,
}

#[multiproc::process]
impl FailsOnce {
    fn run(self) {
        if std::fs::metadata(&self.marker).is_err() {
            std::fs::write(&self.marker, b"1").unwrap();
            panic!("first run fails");
        }
        self.up.send(()).unwrap();
        while !multiproc::shutdown_requested() {
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
}

#[multiproc::test]
fn restarts_and_pool_dispatch_are_events() {
    collect();
    let pool = Pool::builder().workers(1).name("traced").build().unwrap();
    assert_eq!(pool.map(chatty, [1_u32, 2]).unwrap(), [1, 2]);
    let dispatched = seen_with("pool dispatch");
    assert!(
        dispatched.iter().any(|l| l.contains("traced-0")),
        "{dispatched:?}"
    );
    drop(pool);

    let marker = std::env::temp_dir().join(format!("multiproc-trace-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let path = marker.display().to_string();
    let (up_tx, up) = multiproc::channel::<()>().unwrap();
    let supervisor = Supervisor::builder()
        .name("sup")
        .intensity(3, Duration::from_secs(30))
        .child("flaky", Restart::Permanent, move || FailsOnce {
            marker: path.clone(),
            up: up_tx.clone(),
        })
        .start()
        .unwrap();
    // The second run is up, so the restart (announced before it) was traced.
    up.recv_timeout(support::DEADLINE).unwrap();
    let restarted = seen_with("restarting child");
    supervisor.stop().unwrap();
    let _ = std::fs::remove_file(&marker);
    assert!(
        restarted
            .iter()
            .any(|l| l.contains("supervisor=\"sup\"") && l.contains("first run fails")),
        "{restarted:?}"
    );
}

/// A pool dropped after its work (Python's `with Pool() as p:`) ends its workers on purpose:
/// each is traced as "child stopped", none as "child failed ... killed by signal 9".
#[multiproc::test]
fn a_pool_dropped_after_its_work_reports_no_failure() {
    collect();
    let pool = Pool::builder().workers(2).name("quiet").build().unwrap();
    assert_eq!(pool.map(chatty, [3_u32, 4]).unwrap(), [3, 4]);
    drop(pool);
    let failed = seen_with("child failed");
    assert!(!failed.iter().any(|l| l.contains("\"quiet-")), "{failed:?}");
    let stopped = seen_with("child stopped");
    for worker in ["\"quiet-0\"", "\"quiet-1\""] {
        assert!(
            stopped.iter().any(|l| l.contains(worker)),
            "{worker}: {stopped:?}"
        );
    }
}

/// `PoolBuilder::forward_tracing`: the tasks' own events reach this process's subscriber
/// (all of them once the pool has ended its workers).
#[multiproc::test]
fn a_pools_tasks_forward_their_events_when_asked() {
    collect();
    let pool = Pool::builder()
        .workers(2)
        .name("forwarding")
        .forward_tracing(true)
        .build()
        .unwrap();
    assert_eq!(pool.map(pooled, [71_u32, 72, 73]).unwrap(), [71, 72, 73]);
    drop(pool);
    let said = seen_with("hello from a pool task");
    for n in [71, 72, 73] {
        assert!(
            said.iter()
                .any(|l| l.contains(&format!("n={n}")) && l.contains("child=forwarding-")),
            "task {n}: {said:?}"
        );
    }
}

#[multiproc::process]
fn pooled(n: u32) -> u32 {
    tracing::info!(n, "hello from a pool task");
    n
}

#[multiproc::process]
fn logs() {
    log::warn!(target: "legacy", "a log record from the child: {}", 7);
}

/// Feature `log`: with `forward_tracing`, a child's `log` records come back as its `tracing`
/// events do.
#[multiproc::test]
fn a_childs_log_records_are_forwarded_with_the_log_feature() {
    collect();
    Builder::new()
        .forward_tracing(true)
        .spawn_fn(logs, ())
        .unwrap()
        .join()
        .unwrap();
    let said = seen_with("a log record from the child: 7");
    assert!(
        said.iter()
            .any(|l| l.contains("WARN") && l.contains("in child child=logs-")),
        "{said:?}"
    );
}
