//! `multiproc::sync` across processes: a lock's exclusion, its takeover from a holder killed
//! at a random point (never a hang, and the taker told), a semaphore's bound and its
//! permits back from a killed holder, an event's wake-up.

mod support;

use std::time::Duration;

use multiproc::Sender;
use multiproc::sync::{Event, Lock, Semaphore};
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
