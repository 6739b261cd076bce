//! Pools: results in order, worker reuse, and survival of panics, crashes and timeouts.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::{ErrorKind, Pool};
use serde::{Deserialize, Serialize};
use support::{DEADLINE, exists, within};

#[multiproc::process]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::process]
fn pid_of(_: u32) -> u32 {
    std::process::id()
}

#[multiproc::test]
fn map_returns_results_in_input_order_from_reused_workers() {
    let (squares, pids) = within(|| {
        let pool = Pool::new(3).unwrap();
        let squares = pool.map(square, 0..100).unwrap();
        let pids: BTreeSet<u32> = pool.map(pid_of, 0..60).unwrap().into_iter().collect();
        (squares, pids)
    });
    assert_eq!(squares, (0..100).map(|x| x * x).collect::<Vec<_>>());
    assert!(!pids.is_empty() && pids.len() <= 3, "{pids:?}");
    assert!(!pids.contains(&std::process::id()));
}

#[multiproc::process]
fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[derive(Serialize, Deserialize)]
struct Count {
    upto: u64,
}

#[multiproc::process]
impl Count {
    fn run(self) -> u64 {
        (1..=self.upto).sum()
    }
}

#[multiproc::test]
fn starmap_apply_async_and_submit() {
    within(|| {
        let pool = Pool::builder().workers(2).name("calc").build().unwrap();
        assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
        assert_eq!(pool.apply(add, (20, 22)).unwrap(), 42);
        let mut pending: Vec<_> = (0..10)
            .map(|i| pool.apply_async(add, (i, 1)).unwrap())
            .collect();
        pending[0].wait();
        assert!(pending[0].ready());
        let sums: Vec<i32> = pending.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(sums, (1..=10).collect::<Vec<_>>());
        assert_eq!(pool.submit(Count { upto: 10 }).unwrap().get().unwrap(), 55);
    });
}

#[multiproc::process]
fn fragile(x: u32) -> u32 {
    if x == 7 {
        panic!("seven is unlucky");
    }
    x
}

#[multiproc::test]
fn a_panic_is_that_tasks_error_and_the_worker_lives_on() {
    let (results, before, after) = within(|| {
        let pool = Pool::builder().workers(1).chunksize(4).build().unwrap();
        let before = pool.apply(pid_of, (0,)).unwrap();
        let results: Vec<_> = pool.imap(fragile, 0..10).unwrap().collect();
        let after = pool.apply(pid_of, (0,)).unwrap();
        (results, before, after)
    });
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v as usize, i),
            Err(e) => {
                assert_eq!(i, 7);
                assert_eq!(e.kind(), ErrorKind::Panicked);
                let panic = e.remote_panic().unwrap();
                assert_eq!(panic.message(), "seven is unlucky");
                assert!(panic.location().unwrap().contains("pool.rs"), "{e}");
            }
        }
    }
    assert!(results[7].is_err());
    assert_eq!(before, after, "a panic must not cost the worker");
}

/// Task 13 kills its own worker.
#[multiproc::process]
fn die_on_13(x: u32) -> u32 {
    if x == 13 {
        // SAFETY: raise only signals this process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x
}

#[multiproc::test]
fn a_killed_worker_fails_only_its_task_and_the_pool_goes_on() {
    let (results, again) = within(|| {
        // Four tasks per chunk: the victim's chunk-mates must not fail with it.
        let pool = Pool::builder().workers(2).chunksize(4).build().unwrap();
        let results: Vec<_> = pool.imap(die_on_13, 0..40).unwrap().collect();
        let again = pool.map(square, 0..10).unwrap();
        (results, again)
    });
    for (i, r) in results.iter().enumerate() {
        if i == 13 {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
        } else {
            assert_eq!(*r.as_ref().unwrap() as usize, i, "task {i}");
        }
    }
    assert_eq!(again, (0..10).map(|x| x * x).collect::<Vec<_>>());
}

#[multiproc::process]
fn end_badly(how: String) -> u32 {
    match how.as_str() {
        // SAFETY: abort and _exit end only this process.
        "abort" => unsafe { libc::abort() },
        // SAFETY: as above.
        "exit" => unsafe { libc::_exit(3) },
        _ => 0,
    }
}

#[multiproc::test]
fn an_aborting_or_exiting_worker_is_reported_with_its_signal_or_code() {
    let results = within(|| {
        let pool = Pool::builder().workers(2).build().unwrap();
        let hows = ["fine", "abort", "fine", "exit", "fine"].map(String::from);
        pool.imap(end_badly, hows).unwrap().collect::<Vec<_>>()
    });
    assert_eq!(
        results[1].as_ref().unwrap_err().signal(),
        Some(libc::SIGABRT)
    );
    assert_eq!(results[3].as_ref().unwrap_err().exit_code(), Some(3));
    for i in [0, 2, 4] {
        assert_eq!(*results[i].as_ref().unwrap(), 0);
    }
}

#[multiproc::process]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiproc::test]
fn a_task_past_its_timeout_is_killed_with_its_worker_and_reported() {
    let (results, after) = within(|| {
        let pool = Pool::builder()
            .workers(2)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let results: Vec<_> = pool.imap(nap, [1, 60_000, 2, 3]).unwrap().collect();
        let after = pool.map(square, 0..4).unwrap();
        (results, after)
    });
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("task 1"), "{e}");
    for (i, ms) in [(0, 1), (2, 2), (3, 3)] {
        assert_eq!(*results[i].as_ref().unwrap(), ms);
    }
    assert_eq!(after, [0, 1, 4, 9]);
}

#[multiproc::test]
fn max_tasks_per_child_replaces_workers_and_loses_nothing() {
    let pids = within(|| {
        let pool = Pool::builder()
            .workers(2)
            .max_tasks_per_child(3)
            .chunksize(2)
            .build()
            .unwrap();
        pool.map(pid_of, 0..30).unwrap()
    });
    assert_eq!(pids.len(), 30);
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert!(
        distinct.len() >= 10,
        "each worker runs at most 3 tasks: {distinct:?}"
    );
}

static GREETING: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

#[multiproc::process]
fn set_greeting(word: String) {
    *GREETING.lock().unwrap() = word;
}

#[multiproc::process]
fn greet(name: String) -> String {
    format!("{} {name}", GREETING.lock().unwrap())
}

#[multiproc::process]
fn refuse_to_start() {
    panic!("no config file");
}

#[multiproc::test]
fn the_initializer_runs_in_each_worker_first_and_a_failing_one_breaks_the_pool() {
    let (greetings, broken) = within(|| {
        let pool = Pool::builder()
            .workers(2)
            .initializer(set_greeting, ("hello".to_string(),))
            .build()
            .unwrap();
        let greetings = pool.map(greet, ["ann", "bob"].map(String::from)).unwrap();
        let bad = Pool::builder()
            .workers(1)
            .initializer(refuse_to_start, ())
            .build()
            .unwrap();
        let broken = bad.apply(greet, ("x".to_string(),)).unwrap_err();
        (greetings, broken)
    });
    assert_eq!(greetings, ["hello ann", "hello bob"]);
    assert!(broken.to_string().contains("no config file"), "{broken}");
}

#[multiproc::process]
fn forever(_: u32) -> u32 {
    loop {
        std::thread::park();
    }
}

#[multiproc::test]
fn close_join_terminate_and_drop_leave_no_worker_behind() {
    within(|| {
        let pool = Pool::new(2).unwrap();
        let pids: Vec<u32> = pool.map(pid_of, 0..8).unwrap();
        let e = pool.join().unwrap_err();
        assert!(e.to_string().contains("close()"), "{e}");
        let later = pool.apply_async(square, (9,)).unwrap();
        pool.close();
        assert!(
            pool.apply_async(square, (1,)).is_err(),
            "a closed pool takes no tasks"
        );
        pool.join().unwrap();
        assert_eq!(later.get().unwrap(), 81);
        for pid in &pids {
            assert!(!exists(*pid), "worker {pid} outlived join");
        }

        let pool = Pool::new(2).unwrap();
        let stuck = pool.apply_async(forever, (0,)).unwrap();
        let pids: Vec<u32> = pool.map(pid_of, 0..8).unwrap();
        pool.terminate();
        assert!(stuck.get().is_err());

        let pool = Pool::new(2).unwrap();
        let _stuck = pool.apply_async(forever, (0,)).unwrap();
        let more: Vec<u32> = pool.map(pid_of, 0..8).unwrap();
        drop(pool);
        for pid in pids.iter().chain(&more) {
            assert!(!exists(*pid), "worker {pid} outlived its pool");
        }
    });
}

#[multiproc::test]
fn a_plain_fn_is_an_error_before_any_task_runs() {
    fn not_a_process(x: u32) -> u32 {
        x
    }
    let pool = Pool::new(1).unwrap();
    let e = pool.map(not_a_process, [1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::EntryNotFound);
    let _ = DEADLINE;
}

#[multiproc::process]
fn crash_on_start() {
    // SAFETY: abort ends only this process.
    unsafe { libc::abort() };
}

#[multiproc::test]
fn an_initializer_that_crashes_breaks_the_pool_instead_of_respawning_forever() {
    let e = within(|| {
        let pool = Pool::builder()
            .workers(1)
            .initializer(crash_on_start, ())
            .build()
            .unwrap();
        pool.apply(square, (2,)).unwrap_err()
    });
    assert!(e.to_string().contains("died before they were ready"), "{e}");
    assert!(e.to_string().contains("SIGABRT"), "{e}");
}

#[multiproc::process]
fn region_len(region: multiproc::SharedMemory) -> usize {
    region.len()
}

#[multiproc::test]
fn a_chunk_never_carries_more_descriptors_than_one_message_can() {
    let lens = within(|| {
        let regions: Vec<_> = (1..=300)
            .map(|n| multiproc::SharedMemory::from_byte(1, n).unwrap())
            .collect();
        let pool = Pool::builder().workers(1).chunksize(300).build().unwrap();
        pool.map(region_len, regions).unwrap()
    });
    assert_eq!(lens, (1..=300).collect::<Vec<_>>());
}

#[multiproc::test]
fn a_huge_timeout_is_no_timeout() {
    let out = within(|| {
        let pool = Pool::builder()
            .workers(1)
            .timeout(Duration::MAX)
            .build()
            .unwrap();
        pool.map(square, 0..5).unwrap()
    });
    assert_eq!(out, [0, 1, 4, 9, 16]);
}

/// Encodes only values below 1000: an argument that fails to encode part-way through a call.
struct Small(u64);

impl Serialize for Small {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 < 1000 {
            s.serialize_u64(self.0)
        } else {
            Err(serde::ser::Error::custom("too big to send"))
        }
    }
}

impl<'de> Deserialize<'de> for Small {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Small)
    }
}

#[multiproc::process]
fn unwrap_small(x: Small) -> u64 {
    x.0
}

#[multiproc::test]
fn calls_sent_a_chunk_at_a_time_keep_their_order_and_their_errors() {
    within(|| {
        let pool = Pool::builder().workers(2).chunksize(7).build().unwrap();
        // A known count goes out in chunks of 7 while the rest is encoded; an unknown one
        // (filter) all at once: the same results, in input order.
        assert_eq!(
            pool.map(square, 0..500).unwrap(),
            (0..500).map(|x| x * x).collect::<Vec<_>>()
        );
        let odd = pool.map(square, (0..500).filter(|x| x % 2 == 1)).unwrap();
        assert_eq!(
            odd,
            (0..500)
                .filter(|x| x % 2 == 1)
                .map(|x| x * x)
                .collect::<Vec<_>>()
        );
        let unordered: BTreeSet<(usize, u64)> = pool
            .imap_unordered(square, 0..100)
            .unwrap()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        assert_eq!(unordered, (0..100).map(|x| (x as usize, x * x)).collect());
        // An argument that cannot be encoded fails the call, naming its type, even after
        // earlier chunks went out; the pool goes on.
        let e = pool.map(unwrap_small, (990..1010).map(Small)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialize);
        assert!(e.to_string().contains("Small"), "{e}");
        assert_eq!(pool.map(square, [3]).unwrap(), [9]);
    });
}

/// Says its worker's pid, then sleeps `ms`.
#[multiproc::process]
fn report_then_nap(started: multiproc::Sender<u32>, ms: u64) -> u64 {
    started.send(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Issue 15 (the direct path): `apply` on an idle worker is one round trip from its caller,
/// with the scheduler's accounting behind it. A task that kills, aborts or exits its worker,
/// or outlives the timeout, is reported as on the scheduler's path, and the pool goes on;
/// applies from several threads beside a `map` all get their own results.
#[multiproc::test]
fn apply_on_an_idle_worker_fails_and_recovers_as_any_task() {
    within(|| {
        let pool = Pool::builder()
            .workers(2)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        // Warm (idle workers wait for `apply`s), and warm again after each failure.
        let warm = |pool: &Pool| {
            for x in 0..3 {
                assert_eq!(pool.apply(square, (x,)).unwrap(), x * x);
            }
        };
        warm(&pool);
        let e = pool.apply(die_on_13, (13,)).unwrap_err();
        assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
        warm(&pool);
        let e = pool.apply(end_badly, ("abort".to_string(),)).unwrap_err();
        assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
        warm(&pool);
        let e = pool.apply(end_badly, ("exit".to_string(),)).unwrap_err();
        assert_eq!(e.exit_code(), Some(3), "{e}");
        warm(&pool);
        let e = pool.apply(nap, (60_000,)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.to_string().contains("task 0"), "{e}");
        warm(&pool);
        let e = pool.apply(fragile, (7,)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
        warm(&pool);

        let pool = std::sync::Arc::new(pool);
        let callers: Vec<_> = (0..4_u64)
            .map(|t| {
                let pool = std::sync::Arc::clone(&pool);
                std::thread::spawn(move || {
                    for x in 0..100 {
                        let x = t * 1000 + x;
                        assert_eq!(pool.apply(square, (x,)).unwrap(), x * x);
                    }
                })
            })
            .collect();
        let squares = pool.map(square, 0..2000).unwrap();
        assert_eq!(squares, (0..2000).map(|x| x * x).collect::<Vec<_>>());
        for caller in callers {
            caller.join().unwrap();
        }
    });
}

/// Issue 15 (the direct path): a `terminate` while an `apply` runs on a leased worker ends
/// that worker and fails the call at once; a `close` and `join` wait for it and its result.
#[multiproc::test]
fn terminate_and_join_reach_an_apply_in_progress() {
    within(|| {
        for terminate in [true, false] {
            let pool = std::sync::Arc::new(Pool::new(1).unwrap());
            for x in 0..3 {
                assert_eq!(pool.apply(square, (x,)).unwrap(), x * x);
            }
            let (started_tx, started) = multiproc::channel::<u32>().unwrap();
            let nap = if terminate { 60_000 } else { 200 };
            let caller = {
                let pool = std::sync::Arc::clone(&pool);
                std::thread::spawn(move || pool.apply(report_then_nap, (started_tx, nap)))
            };
            let pid = started.recv_timeout(DEADLINE).unwrap();
            if terminate {
                pool.terminate();
                let e = caller.join().unwrap().unwrap_err();
                assert!(e.to_string().contains("terminated"), "{e}");
            } else {
                pool.close();
                pool.join().unwrap();
                assert_eq!(caller.join().unwrap().unwrap(), 200);
            }
            assert!(!exists(pid), "worker {pid} outlived its pool");
        }
    });
}

#[multiproc::process]
fn square_here(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// Issue 15 (the direct path, under faults): workers SIGKILLed at random points while a
/// caller runs `apply` after `apply` (idle, leased, between the task and its answer) cost at
/// most the call each was running, which fails naming the signal (or, struck three times
/// holding one call, that call); every other call gets its own result, none hangs, and the
/// pool goes on.
#[multiproc::test]
fn workers_killed_at_random_points_of_applies_cost_only_the_call_they_ran() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const KILLS: usize = 40;
    within(|| {
        let mut next = support::random();
        let pool = Arc::new(Pool::new(2).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let caller = {
            let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut ok, mut killed) = (0, 0);
                for x in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match pool.apply(square_here, (x,)) {
                        Ok((square, _)) => {
                            assert_eq!(square, x * x, "call {x}");
                            ok += 1;
                        }
                        // The call its worker ran when killed; or one that three workers
                        // in a row died holding (queued behind the call the strike
                        // followed), which then fails rather than waits for a fourth.
                        Err(e) => {
                            assert!(
                                e.signal() == Some(libc::SIGKILL)
                                    || e.to_string().contains("3 workers died holding"),
                                "call {x}: {e}"
                            );
                            killed += 1;
                        }
                    }
                }
                (ok, killed)
            })
        };
        for _ in 0..KILLS {
            // A live worker (it just answered), struck a moment later.
            let (_, pid) = pool.apply(square_here, (0,)).unwrap();
            for _ in 0..next() % 20_000 {
                std::hint::spin_loop();
            }
            // SAFETY: kill signals only the worker, a child not reaped before it dies.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        stop.store(true, Ordering::Relaxed);
        let (ok, killed) = caller.join().unwrap();
        assert!(killed <= KILLS, "{killed} calls failed to {KILLS} kills");
        assert!(ok > 0);
        assert_eq!(
            pool.map(square, 0..10).unwrap(),
            (0..10).map(|x| x * x).collect::<Vec<_>>()
        );
    });
}
