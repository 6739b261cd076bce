//! `multiproc::sync` across processes: a lock's exclusion, its takeover from a holder killed
//! at a random point (never a hang, and the taker told), a reentrant lock's, a semaphore's
//! bound and its permits back from a killed holder, an event's wake-up, shared values (a
//! writer killed mid-update is reported, never passed off as clean), a condition's wake-ups
//! and a killed waiter, a barrier's rounds and a party killed at a random point.

mod support;

use std::time::Duration;

use multiproc::Sender;
use multiproc::sync::{Array, Barrier, Condition, Event, Lock, RLock, Semaphore, Value};
use support::{DEADLINE, join};

/// Adds one to the number in `path`, `times` times, each read-modify-write under `lock`.
#[multiproc::process]
fn add_under_lock(lock: Lock, path: String, times: u32) {
    for _ in 0..times {
        let _held = lock.lock().expect("no holder dies in this test");
        let n: u64 = std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(&path, (n + 1).to_string()).unwrap();
    }
}

/// A file's read-modify-write from four processes at once loses no update under the lock.
#[multiproc::test]
fn a_lock_gives_one_process_at_a_time() {
    let path = std::env::temp_dir().join(format!("multiproc-lock-{}", std::process::id()));
    std::fs::write(&path, "0").unwrap();
    let lock = Lock::new().unwrap();
    let file = path.display().to_string();
    let children: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(add_under_lock, (lock.clone(), file.clone(), 200)).unwrap())
        .collect();
    for child in children {
        join(child).unwrap();
    }
    let total = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(total, "800");
    assert!(!lock.is_locked());
}

// ANCHOR: robust
/// Takes the lock, says so, and keeps it until killed.
#[multiproc::process]
fn hold_until_killed(lock: Lock, held: Sender<()>) {
    let _held = lock.lock().unwrap_or_else(|died| died.into_guard());
    held.send(()).unwrap();
    loop {
        std::thread::park();
    }
}

/// A holder SIGKILLed with the lock: the next `lock` takes it over, names the dead holder,
/// and the lock is clean after.
#[multiproc::test]
fn a_killed_holder_does_not_keep_the_lock_and_the_taker_is_told() {
    let lock = Lock::new().unwrap();
    let (tx, held) = multiproc::channel::<()>().unwrap();
    let mut holder = multiproc::spawn(hold_until_killed, (lock.clone(), tx)).unwrap();
    held.recv_timeout(DEADLINE).unwrap();
    assert!(lock.try_lock().is_none(), "held by the child");
    let pid = holder.pid();
    holder.kill().unwrap();
    let _ = join(holder);
    let died = lock
        .lock_timeout(DEADLINE)
        .expect("a dead holder's lock is taken over")
        .unwrap_err();
    assert_eq!(died.pid(), pid);
    drop(died.into_guard());
    assert!(lock.lock().is_ok());
}
// ANCHOR_END: robust

/// Holds the lock almost all the time (released for an instant between holds), until killed.
#[multiproc::process]
fn churn(lock: Lock, started: Sender<()>) {
    started.send(()).unwrap();
    loop {
        let _held = lock.lock().unwrap_or_else(|died| died.into_guard());
        let until = std::time::Instant::now() + Duration::from_micros(500);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// Fault injection: holders killed at random points of their lock/unlock loop never leave the
/// lock stuck; a takeover names the holder that died, and most kills land while it is held.
#[multiproc::test]
fn holders_killed_at_random_points_never_leave_the_lock_stuck() {
    let lock = Lock::new().unwrap();
    let mut next = support::random();
    let mut taken_over = 0;
    const ROUNDS: usize = 8;
    for _ in 0..ROUNDS {
        let (tx, started) = multiproc::channel::<()>().unwrap();
        let mut holder = multiproc::spawn(churn, (lock.clone(), tx)).unwrap();
        started.recv_timeout(DEADLINE).unwrap();
        let pid = holder.pid();
        // A random moment of its loop.
        let until = std::time::Instant::now() + Duration::from_micros(next() % 50_000);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        holder.kill().unwrap();
        let _ = join(holder);
        match lock
            .lock_timeout(DEADLINE)
            .expect("the lock is never stuck")
        {
            Ok(_) => {}
            Err(died) => {
                assert_eq!(died.pid(), pid);
                taken_over += 1;
            }
        }
        assert!(!lock.is_locked());
    }
    assert!(
        taken_over > 0,
        "no kill landed while the lock was held in {ROUNDS} rounds"
    );
}

#[multiproc::process]
fn wait_for(event: Event, timeout_ms: u64) -> bool {
    event.wait_timeout(Duration::from_millis(timeout_ms))
}

/// An event set in one process wakes a waiter in another; unset, the wait times out.
#[multiproc::test]
fn an_event_set_here_wakes_a_child_there() {
    let event = Event::new().unwrap();
    assert!(!join(multiproc::spawn(wait_for, (event.clone(), 50)).unwrap()).unwrap());
    let waiter = multiproc::spawn(wait_for, (event.clone(), 30_000)).unwrap();
    event.set();
    assert!(join(waiter).unwrap());
    assert!(event.is_set());
}

/// Holds a permit while its marker file is in `dir`, 20 ms, `rounds` times; returns the most
/// markers it saw there at once (its own included).
#[multiproc::process]
fn crowd(slots: Semaphore, dir: String, rounds: u32) -> usize {
    let mine = std::path::Path::new(&dir).join(std::process::id().to_string());
    let mut most = 0;
    for _ in 0..rounds {
        let _permit = slots.acquire();
        std::fs::write(&mine, b"").unwrap();
        most = most.max(std::fs::read_dir(&dir).unwrap().count());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::remove_file(&mine).unwrap();
    }
    most
}

/// Two permits, four processes: never more than two hold one at once, and two do at times.
#[multiproc::test]
fn a_semaphore_lets_at_most_its_permits_in() {
    let dir = std::env::temp_dir().join(format!("multiproc-sem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let slots = Semaphore::new(2).unwrap();
    let path = dir.display().to_string();
    let children: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(crowd, (slots.clone(), path.clone(), 10)).unwrap())
        .collect();
    let most: Vec<usize> = children.into_iter().map(|c| join(c).unwrap()).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        most.iter().all(|&n| n <= 2),
        "more than 2 holders at once: {most:?}"
    );
    assert_eq!(slots.available(), 2);
}

/// Takes a permit, says so, and keeps it until killed.
#[multiproc::process]
fn hold_a_permit(slots: Semaphore, held: Sender<()>) {
    let _permit = slots.acquire();
    held.send(()).unwrap();
    loop {
        std::thread::park();
    }
}

/// A holder SIGKILLed with the only permit does not keep it: the next `acquire` gets it.
#[multiproc::test]
fn a_killed_holders_permit_comes_back() {
    let one = Semaphore::new(1).unwrap();
    let (tx, held) = multiproc::channel::<()>().unwrap();
    let mut holder = multiproc::spawn(hold_a_permit, (one.clone(), tx)).unwrap();
    held.recv_timeout(DEADLINE).unwrap();
    assert!(one.try_acquire().is_none(), "held by the child");
    holder.kill().unwrap();
    let _ = join(holder);
    let permit = one.acquire_timeout(DEADLINE);
    assert!(
        permit.is_some(),
        "the dead holder's permit did not come back"
    );
}

/// Holds the reentrant lock two levels deep, says so, and keeps it until killed.
#[multiproc::process]
fn hold_twice_until_killed(lock: RLock, held: Sender<()>) {
    let _outer = lock.lock().unwrap_or_else(|died| died.into_guard());
    let _inner = lock.lock().expect("taken again by its own thread");
    held.send(()).unwrap();
    loop {
        std::thread::park();
    }
}

/// A reentrant lock held two levels deep by a child that is then SIGKILLed: held, the parent
/// cannot take it; after, the parent takes it over (told which pid died) and can take it
/// again itself.
#[multiproc::test]
fn a_reentrant_lock_held_twice_by_a_killed_holder_is_taken_over() {
    let lock = RLock::new().unwrap();
    let (tx, held) = multiproc::channel::<()>().unwrap();
    let mut holder = multiproc::spawn(hold_twice_until_killed, (lock.clone(), tx)).unwrap();
    held.recv_timeout(DEADLINE).unwrap();
    assert!(lock.try_lock().is_none(), "held by the child");
    let pid = holder.pid();
    holder.kill().unwrap();
    let _ = join(holder);
    let died = lock
        .lock_timeout(DEADLINE)
        .expect("a dead holder's lock is taken over")
        .unwrap_err();
    assert_eq!(died.pid(), pid);
    let outer = died.into_guard();
    let inner = lock.try_lock().unwrap().unwrap();
    drop((inner, outer));
    assert!(!lock.is_locked());
}

/// Adds one to a shared counter `times` times, and sets its own cell of `cells`.
#[multiproc::process]
fn count_and_mark(total: Value<u64>, cells: Array<u32>, me: usize, times: u32) {
    for _ in 0..times {
        *total.lock().expect("no holder dies in this test") += 1;
    }
    cells.lock().expect("no holder dies in this test")[me] = me as u32 + 1;
}

/// Four processes' increments of one `Value` under its lock lose none; each sets its own
/// cell of an `Array` and the parent sees them all.
#[multiproc::test]
fn a_shared_value_and_array_see_every_process_write() {
    let total = Value::new(0_u64).unwrap();
    let cells = Array::<u32>::zeroed(4).unwrap();
    let children: Vec<_> = (0..4)
        .map(|me| {
            multiproc::spawn(count_and_mark, (total.clone(), cells.clone(), me, 500)).unwrap()
        })
        .collect();
    for child in children {
        join(child).unwrap();
    }
    assert_eq!(total.get(), 2000);
    assert_eq!(cells.to_vec(), [1, 2, 3, 4]);
}

// ANCHOR: value
/// Rewrites both halves of a pair under the value's lock, forever, spinning between the
/// two writes: killed at a random moment, it may leave them unequal only with the lock held.
#[multiproc::process]
fn rewrite_pairs(pair: Value<[u64; 2]>, started: Sender<()>) {
    started.send(()).unwrap();
    for n in 1_u64.. {
        let mut held = pair.lock().unwrap_or_else(|died| died.into_guard());
        held[0] = n;
        let until = std::time::Instant::now() + Duration::from_micros(300);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        held[1] = n;
    }
}

/// Fault injection: a writer killed at random points. A clean `lock` after it always finds
/// the pair consistent (a half-made update is never passed off as clean); a takeover says so
/// and names the writer; the lock is never stuck.
#[multiproc::test]
fn a_values_writer_killed_mid_update_is_reported_never_passed_off_as_clean() {
    let pair = Value::new([0_u64; 2]).unwrap();
    let mut next = support::random();
    let mut taken_over = 0;
    const ROUNDS: usize = 8;
    for _ in 0..ROUNDS {
        let (tx, started) = multiproc::channel::<()>().unwrap();
        let mut writer = multiproc::spawn(rewrite_pairs, (pair.clone(), tx)).unwrap();
        started.recv_timeout(DEADLINE).unwrap();
        let pid = writer.pid();
        let until = std::time::Instant::now() + Duration::from_micros(next() % 30_000);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        writer.kill().unwrap();
        let _ = join(writer);
        match pair
            .lock_timeout(DEADLINE)
            .expect("the lock is never stuck")
        {
            Ok(held) => assert_eq!(held[0], held[1], "a clean lock found a half-made pair"),
            Err(died) => {
                assert_eq!(died.pid(), pid);
                taken_over += 1;
                let mut held = died.into_guard();
                held[1] = held[0]; // repaired
            }
        }
    }
    assert!(
        taken_over > 0,
        "no kill landed while the value was locked in {ROUNDS} rounds"
    );
}
// ANCHOR_END: value

/// Waits (under the condition's lock) until the count reaches `until`; returns it.
#[multiproc::process]
fn wait_until(count: Condition<u32>, until: u32) -> u32 {
    let held = count.lock().expect("no holder dies in this test");
    let (held, timed_out) = held
        .wait_timeout_while(Duration::from_secs(30), |n| *n < until)
        .expect("no holder dies in this test");
    assert!(!timed_out, "no notification came");
    *held
}

/// A child waiting on a condition in one process is woken by changes made and notified in
/// another, each under the condition's lock, which the waiter gives up while it waits.
#[multiproc::test]
fn a_condition_notified_here_wakes_a_waiter_there() {
    let count = Condition::with_value(0_u32).unwrap();
    let waiter = multiproc::spawn(wait_until, (count.clone(), 5)).unwrap();
    for _ in 0..5 {
        *count.lock().unwrap() += 1;
        count.notify_all();
    }
    assert_eq!(join(waiter).unwrap(), 5);
}

/// Waits on the condition (its lock given up meanwhile), having said it is about to.
#[multiproc::process]
fn wait_forever(signal: Condition, waiting: Sender<()>) {
    let held = signal.lock().unwrap_or_else(|died| died.into_guard());
    waiting.send(()).unwrap();
    let _ = held.wait_while(|()| true);
}

/// A waiter killed while it waits does not hold the lock: the parent takes it cleanly, and
/// the condition still wakes another waiter.
#[multiproc::test]
fn a_waiter_killed_while_waiting_leaves_the_condition_usable() {
    let signal = Condition::new().unwrap();
    let (tx, waiting) = multiproc::channel::<()>().unwrap();
    let mut waiter = multiproc::spawn(wait_forever, (signal.clone(), tx)).unwrap();
    waiting.recv_timeout(DEADLINE).unwrap();
    // Taking the lock means the waiter has given it up: it sleeps on the condition.
    drop(signal.lock_timeout(DEADLINE).expect("given up").unwrap());
    waiter.kill().unwrap();
    let _ = join(waiter);
    signal.notify_all();
    assert!(
        signal.lock_timeout(DEADLINE).expect("free").is_ok(),
        "clean"
    );
    let count = Condition::with_value(0_u32).unwrap();
    let other = multiproc::spawn(wait_until, (count.clone(), 1)).unwrap();
    *count.lock().unwrap() = 1;
    count.notify_one();
    assert_eq!(join(other).unwrap(), 1);
}

/// Waits at the barrier `rounds` times; the index of each wait.
#[multiproc::process]
fn meet(start: Barrier, rounds: usize) -> Vec<usize> {
    (0..rounds)
        .map(|_| start.wait().expect("no party dies in this test"))
        .collect()
}

/// Three processes pass five rounds together, each round giving each a different index.
#[multiproc::test]
fn a_barriers_parties_pass_each_round_together() {
    let start = Barrier::new(3).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(meet, (start.clone(), 5)).unwrap())
        .collect();
    let seen: Vec<Vec<usize>> = children.into_iter().map(|c| join(c).unwrap()).collect();
    for round in 0..5 {
        let mut indexes: Vec<usize> = seen.iter().map(|s| s[round]).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2], "round {round}: {seen:?}");
    }
}

/// Four processes meet in pairs at a barrier of two, once each: those of the first round
/// end (dropping their copies) before the second round's arrive, and the second round
/// passes all the same (a party that left is not one that died).
#[multiproc::test]
fn parties_that_leave_normally_do_not_break_the_barrier() {
    let pairs = Barrier::new(2).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(meet, (pairs.clone(), 1)).unwrap())
        .collect();
    let mut seen: Vec<usize> = children
        .into_iter()
        .flat_map(|c| join(c).unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 0, 1, 1]);
    assert!(!pairs.is_broken());
}

// ANCHOR: barrier
/// Waits at the barrier round after round, a random moment of work between, until a wait
/// fails; the pid of the dead party that broke it.
#[multiproc::process]
fn meet_until_broken(start: Barrier, started: Sender<()>, seed: u64) -> Option<u32> {
    started.send(()).unwrap();
    let mut x = seed | 1;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let until = std::time::Instant::now() + Duration::from_micros(x % 2_000);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        if let Err(broken) = start.wait() {
            return broken.dead_party();
        }
    }
}

/// Fault injection: one of three parties SIGKILLed at a random point of its rounds (working,
/// or waiting at the barrier). The other two never hang: their next wait fails, naming the
/// killed process.
#[multiproc::test]
fn a_party_killed_at_a_random_point_breaks_the_barrier_for_the_others() {
    let mut next = support::random();
    for _ in 0..5 {
        let start = Barrier::new(3).unwrap();
        let (tx, started) = multiproc::channel::<()>().unwrap();
        let mut parties: Vec<_> = (0..3)
            .map(|_| multiproc::spawn(meet_until_broken, (start.clone(), tx.clone(), next())))
            .collect::<multiproc::Result<_>>()
            .unwrap();
        for _ in 0..3 {
            started.recv_timeout(DEADLINE).unwrap();
        }
        let until = std::time::Instant::now() + Duration::from_micros(next() % 50_000);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        let mut victim = parties.remove((next() % 3) as usize);
        let pid = victim.pid();
        victim.kill().unwrap();
        let _ = join(victim);
        for survivor in parties {
            assert_eq!(join(survivor).unwrap(), Some(pid));
        }
        assert!(start.is_broken());
    }
}
// ANCHOR_END: barrier
