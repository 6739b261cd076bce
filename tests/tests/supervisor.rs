//! Supervision: restart types, the three strategies and the intensity limit.

mod support;

use std::time::Duration;

use multiproc::{Receiver, Restart, Sender, Strategy, Supervisor};
use serde::{Deserialize, Serialize};
use support::{DEADLINE, within};

/// Reports `(name, incarnation)` when it starts, fails while `incarnation <= failures`, then
/// either returns (`stay: false`) or runs until asked to stop.
#[derive(Serialize, Deserialize)]
struct Child {
    name: String,
    incarnation: u32,
    failures: u32,
    stay: bool,
    started: Sender<(String, u32)>,
}

#[multiproc::process]
impl Child {
    fn run(self) {
        self.started
            .send((self.name.clone(), self.incarnation))
            .unwrap();
        assert!(
            self.incarnation > self.failures,
            "{} fails in incarnation {}",
            self.name,
            self.incarnation
        );
        while self.stay && !multiproc::shutdown_requested() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A factory for [`Child`] that counts incarnations.
fn child(
    name: &str,
    failures: u32,
    stay: bool,
    started: &Sender<(String, u32)>,
) -> impl FnMut() -> Child + Send + 'static {
    let (name, started) = (name.to_string(), started.clone());
    let mut incarnation = 0;
    move || {
        incarnation += 1;
        Child {
            name: name.clone(),
            incarnation,
            failures,
            stay,
            started: started.clone(),
        }
    }
}

/// Receives start reports until `until` returns true for the ones so far.
fn starts_until(
    rx: &Receiver<(String, u32)>,
    until: impl Fn(&[(String, u32)]) -> bool,
) -> Vec<(String, u32)> {
    let mut seen = Vec::new();
    while !until(&seen) {
        seen.push(rx.recv_timeout(DEADLINE).expect("a start report"));
    }
    seen
}

fn count(seen: &[(String, u32)], name: &str) -> usize {
    seen.iter().filter(|(n, _)| n == name).count()
}

#[multiproc::test]
fn a_transient_child_is_restarted_until_it_returns() {
    let (tx, _rx) = multiproc::channel().unwrap();
    let report = within(move || {
        Supervisor::builder()
            .intensity(5, Duration::from_secs(30))
            .child("flaky", Restart::Transient, child("flaky", 2, false, &tx))
            .start()
            .unwrap()
            .wait()
            .unwrap()
    });
    assert_eq!(report.starts_of("flaky"), 3);
}

#[multiproc::test]
fn a_temporary_child_is_never_restarted() {
    let (tx, _rx) = multiproc::channel().unwrap();
    let report = within(move || {
        Supervisor::builder()
            .child("once", Restart::Temporary, child("once", 5, false, &tx))
            .start()
            .unwrap()
            .wait()
            .unwrap()
    });
    assert_eq!(report.starts_of("once"), 1);
}

#[multiproc::test]
fn too_many_restarts_trip_the_intensity_and_name_the_last_failure() {
    let (tx, _rx) = multiproc::channel().unwrap();
    let e = within(move || {
        Supervisor::builder()
            .name("strict")
            .intensity(2, Duration::from_secs(30))
            .child(
                "doomed",
                Restart::Permanent,
                child("doomed", u32::MAX, false, &tx),
            )
            .start()
            .unwrap()
            .wait()
            .unwrap_err()
    });
    let text = e.to_string();
    assert!(
        text.contains("supervisor `strict` gave up: more than 2 restarts"),
        "{text}"
    );
    assert!(text.contains("doomed fails in incarnation 3"), "{text}");
}

#[multiproc::test]
fn one_for_all_restarts_the_siblings_too() {
    let (tx, rx) = multiproc::channel().unwrap();
    let sup = Supervisor::builder()
        .strategy(Strategy::OneForAll)
        .intensity(3, Duration::from_secs(30))
        .grace(DEADLINE)
        .child("a", Restart::Permanent, child("a", 1, true, &tx))
        .child("b", Restart::Permanent, child("b", 0, true, &tx))
        .start()
        .unwrap();
    starts_until(&rx, |s| count(s, "a") == 2 && count(s, "b") == 2);
    let report = within(move || sup.stop().unwrap());
    assert_eq!((report.starts_of("a"), report.starts_of("b")), (2, 2));
}

#[multiproc::test]
fn rest_for_one_restarts_those_started_after() {
    let (tx, rx) = multiproc::channel().unwrap();
    let sup = Supervisor::builder()
        .strategy(Strategy::RestForOne)
        .intensity(3, Duration::from_secs(30))
        .grace(DEADLINE)
        .child("a", Restart::Permanent, child("a", 0, true, &tx))
        .child("b", Restart::Permanent, child("b", 1, true, &tx))
        .child("c", Restart::Permanent, child("c", 0, true, &tx))
        .start()
        .unwrap();
    starts_until(&rx, |s| count(s, "b") == 2 && count(s, "c") == 2);
    let report = within(move || sup.stop().unwrap());
    assert_eq!(
        (
            report.starts_of("a"),
            report.starts_of("b"),
            report.starts_of("c")
        ),
        (1, 2, 2)
    );
}

#[multiproc::test]
fn one_for_one_leaves_the_siblings_alone() {
    let (tx, rx) = multiproc::channel().unwrap();
    let sup = Supervisor::builder()
        .intensity(3, Duration::from_secs(30))
        .grace(DEADLINE)
        .child("a", Restart::Permanent, child("a", 0, true, &tx))
        .child("b", Restart::Permanent, child("b", 1, true, &tx))
        .start()
        .unwrap();
    starts_until(&rx, |s| count(s, "b") == 2 && count(s, "a") == 1);
    let report = within(move || sup.stop().unwrap());
    assert_eq!((report.starts_of("a"), report.starts_of("b")), (1, 2));
}

/// A supervisor inside a process: when it gives up, the process panics, which its own
/// supervisor sees as an abnormal exit.
#[derive(Serialize, Deserialize)]
struct Inner {
    started: Sender<(String, u32)>,
}

#[multiproc::process]
impl Inner {
    fn run(self) {
        Supervisor::builder()
            .name("inner")
            .intensity(1, Duration::from_secs(30))
            .child(
                "doomed",
                Restart::Permanent,
                child("doomed", u32::MAX, false, &self.started),
            )
            .start()
            .unwrap()
            .wait()
            .expect("the inner supervisor gave up");
    }
}

#[multiproc::test]
fn a_nested_supervisor_that_gives_up_escalates_to_its_own() {
    let (tx, rx) = multiproc::channel().unwrap();
    let e = within(move || {
        Supervisor::builder()
            .name("outer")
            .intensity(1, Duration::from_secs(30))
            .child("inner", Restart::Permanent, move || Inner {
                started: tx.clone(),
            })
            .start()
            .unwrap()
            .wait()
            .unwrap_err()
    });
    let text = e.to_string();
    assert!(text.contains("supervisor `outer` gave up"), "{text}");
    assert!(text.contains("the inner supervisor gave up"), "{text}");
    // Two incarnations of the inner supervisor, each starting its child twice.
    let seen: Vec<_> = rx.try_iter_all();
    assert_eq!(seen.len(), 4, "{seen:?}");
}

trait TryIterAll<T> {
    fn try_iter_all(&self) -> Vec<T>;
}

impl<T: serde::de::DeserializeOwned> TryIterAll<T> for Receiver<T> {
    fn try_iter_all(&self) -> Vec<T> {
        std::iter::from_fn(|| self.try_recv().ok()).collect()
    }
}

/// Reports `(name, incarnation, pid)` when it starts, then runs until asked to stop.
#[derive(Serialize, Deserialize)]
struct Member {
    name: String,
    incarnation: u32,
    started: Sender<(String, u32, u32)>,
}

#[multiproc::process]
impl Member {
    fn run(self) {
        let me = (self.name.clone(), self.incarnation, std::process::id());
        self.started.send(me).unwrap();
        while !multiproc::shutdown_requested() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

const MEMBERS: [&str; 3] = ["a", "b", "c"];

/// A supervisor of `a`, `b`, `c` (permanent [`Member`]s) and the channel they report on.
fn trio(strategy: Strategy) -> (Supervisor, Receiver<(String, u32, u32)>) {
    let (tx, rx) = multiproc::channel().unwrap();
    let mut builder = Supervisor::builder()
        .strategy(strategy)
        .intensity(1_000, Duration::from_secs(60))
        .grace(DEADLINE);
    for name in MEMBERS {
        let (tx, mut incarnation) = (tx.clone(), 0);
        builder = builder.child(name, Restart::Permanent, move || {
            incarnation += 1;
            Member {
                name: name.to_string(),
                incarnation,
                started: tx.clone(),
            }
        });
    }
    (builder.start().unwrap(), rx)
}

/// Each member's pid, from start reports, until `done` holds for them.
fn pids_until(
    rx: &Receiver<(String, u32, u32)>,
    pids: &mut [u32; 3],
    done: impl Fn(&[u32; 3]) -> bool,
) {
    while !done(pids) {
        let (name, _, pid) = rx.recv_timeout(DEADLINE).expect("a start report");
        let i = MEMBERS.iter().position(|m| *m == name).expect("a member");
        pids[i] = pid;
    }
}

fn sigkill(pid: u32) {
    // SAFETY: kill takes plain integers; `pid` is a child of the supervisor in this process.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// The members a strategy restarts when member `victim` dies.
fn restarted(strategy: Strategy, victim: usize) -> Vec<bool> {
    (0..3)
        .map(|j| match strategy {
            Strategy::OneForOne => j == victim,
            Strategy::RestForOne => j >= victim,
            _ => true,
        })
        .collect()
}

/// Regression (issue 13, item 1): one-for-one stopped the failed child's later siblings and
/// never restarted them. Kills the first, the middle and the last member under each strategy
/// and checks whose pid changed: exactly the strategy's set, the others still running.
#[multiproc::test]
fn each_strategy_restarts_exactly_its_set_of_siblings() {
    for strategy in [
        Strategy::OneForOne,
        Strategy::RestForOne,
        Strategy::OneForAll,
    ] {
        for victim in 0..3 {
            let (sup, rx) = trio(strategy);
            let mut before = [0; 3];
            pids_until(&rx, &mut before, |p| p.iter().all(|pid| *pid != 0));
            sigkill(before[victim]);
            let expected = restarted(strategy, victim);
            let mut after = before;
            pids_until(&rx, &mut after, |p| {
                (0..3).all(|j| (p[j] != before[j]) == expected[j])
            });
            for j in 0..3 {
                if !expected[j] {
                    assert!(
                        support::exists(before[j]),
                        "{strategy:?}, {} killed: {} was stopped",
                        MEMBERS[victim],
                        MEMBERS[j]
                    );
                }
            }
            let report = within(move || sup.stop().unwrap());
            let starts: Vec<usize> = MEMBERS.iter().map(|m| report.starts_of(m)).collect();
            let want: Vec<usize> = expected.iter().map(|r| 1 + usize::from(*r)).collect();
            assert_eq!(starts, want, "{strategy:?}, {} killed", MEMBERS[victim]);
        }
    }
}

/// Fault injection: bursts of SIGKILLs at random members, also while the supervisor is still
/// restarting the last ones; afterwards every member runs again, under each strategy.
#[multiproc::test]
fn random_kills_during_restarts_leave_every_member_running() {
    let mut next = support::random();
    for strategy in [
        Strategy::OneForOne,
        Strategy::RestForOne,
        Strategy::OneForAll,
    ] {
        let (sup, rx) = trio(strategy);
        let mut pids = [0; 3];
        pids_until(&rx, &mut pids, |p| p.iter().all(|pid| *pid != 0));
        let mut killed = std::collections::HashSet::new();
        for _ in 0..8 {
            // A burst of up to three kills, without waiting for the restarts between them.
            for _ in 0..=(next() % 3) {
                let pid = pids[next() as usize % 3];
                if killed.insert(pid) {
                    sigkill(pid);
                }
            }
            pids_until(&rx, &mut pids, |p| {
                p.iter()
                    .all(|pid| !killed.contains(pid) && support::exists(*pid))
            });
        }
        within(move || sup.stop().unwrap());
        for pid in pids {
            assert!(
                !support::exists(pid),
                "{strategy:?}: stop left {pid} running"
            );
        }
    }
}

/// Reports the variable `MULTIPROC_SUPERVISED` and its own name when it starts, then runs
/// until asked to stop.
#[derive(Serialize, Deserialize)]
struct Configured {
    started: Sender<(String, String)>,
}

#[multiproc::process]
impl Configured {
    fn run(self) {
        let var = std::env::var("MULTIPROC_SUPERVISED").unwrap_or_default();
        let name = multiproc::current().name().to_string();
        self.started.send((var, name)).unwrap();
        while !multiproc::shutdown_requested() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// `child_with`: each start of a supervised child is configured by a `Builder` (here its
/// environment), under the name the supervisor gives it.
#[multiproc::test]
fn a_supervised_child_starts_with_its_builders_configuration() {
    let (tx, started) = multiproc::channel::<(String, String)>().unwrap();
    let builder = multiproc::Builder::new()
        .env("MULTIPROC_SUPERVISED", "yes")
        .name("ignored");
    let supervisor = Supervisor::builder()
        .child_with("configured", Restart::Permanent, builder, move || {
            Configured {
                started: tx.clone(),
            }
        })
        .start()
        .unwrap();
    let (var, name) = started.recv_timeout(DEADLINE).unwrap();
    supervisor.stop().unwrap();
    assert_eq!((var.as_str(), name.as_str()), ("yes", "configured"));
}
