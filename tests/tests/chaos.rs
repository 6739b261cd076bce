//! Fault injection: SIGKILL pool workers at random while the pool maps 10,000 tasks. Every
//! task yields its result or an error, none is lost or reported twice, and the pool is usable
//! after. Alone in its binary: it kills children of this process.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use multiproc::Pool;
use support::within;

#[multiproc::process]
fn work(x: u64) -> u64 {
    // About 0.1 ms each: long enough to be killed in the middle of one.
    let until = std::time::Instant::now() + Duration::from_micros(100);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    x * 3
}

#[multiproc::test]
fn sigkill_random_workers_while_mapping_ten_thousand_tasks() {
    let (results, kills, after) = within(|| {
        let pool = Pool::builder().workers(3).name("chaos").build().unwrap();
        let mut next = support::random();
        let mut kills = 0;
        let mut results = Vec::with_capacity(10_000);
        for (i, result) in pool.imap(work, 0..10_000).unwrap().enumerate() {
            results.push(result);
            // Strike every 400 results: a random worker, whatever it is doing.
            if i % 400 == 399 {
                let workers = support::children();
                if !workers.is_empty() {
                    let (pid, _) = workers[next() as usize % workers.len()];
                    // SAFETY: kill takes plain integers; `pid` is our unreaped child.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    kills += 1;
                }
            }
        }
        let after = pool.map(work, 0..100).unwrap();
        (results, kills, after)
    });
    assert_eq!(results.len(), 10_000, "every task reports once");
    let mut failed = 0;
    let mut seen = HashSet::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => {
                assert_eq!(*v, i as u64 * 3, "task {i}");
                assert!(seen.insert(*v), "task {i} reported twice");
            }
            Err(e) => {
                assert_eq!(e.signal(), Some(libc::SIGKILL), "task {i}: {e}");
                failed += 1;
            }
        }
    }
    assert!(kills >= 20, "only {kills} kills");
    assert!(failed <= kills, "{failed} failures from {kills} kills");
    assert_eq!(after, (0..100).map(|x| x * 3).collect::<Vec<_>>());
    println!(
        "{kills} workers killed, {failed} tasks failed, the other {} returned",
        10_000 - failed
    );
}
