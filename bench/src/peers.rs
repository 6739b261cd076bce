//! The rows beside the Rust peers, each peer running its own program in this run:
//! procspawn 1.0 (spawn + join a no-op; one task on a warm pool of 2) and raw ipc-channel
//! 0.23 (a round trip of one u64; 64 B and 1 MiB `Vec<u8>` one-way), with multiproc on the
//! same workloads. Rounds alternate between the two sides, so that drift in the machine's
//! load hits both alike; each side's figure is the median of its rounds. "x" = times
//! better than the peer.

use std::process::{Command, Stdio};
use std::time::Instant;

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};

use super::{double, multiproc_round_trip, noop, one_way, sink_vec};

/// Set in an ipc-channel peer child: `<role>:<server name>`.
const IPC_CHILD: &str = "MULTIPROC_BENCH_IPC_CHILD";

/// Runs this process as an ipc-channel peer child if it is one; `true` then.
pub(super) fn child() -> bool {
    let Ok(what) = std::env::var(IPC_CHILD) else {
        return false;
    };
    let (role, name) = what.split_once(':').expect("role:name");
    let boot = IpcSender::connect(name.to_string()).expect("connect to the parent");
    match role {
        "echo" => {
            let (in_tx, in_rx) = ipc::channel::<u64>().expect("channel");
            let (out_tx, out_rx) = ipc::channel::<u64>().expect("channel");
            boot.send(Boot::Echo(in_tx, out_rx)).expect("boot");
            while let Ok(v) = in_rx.recv() {
                if out_tx.send(v).is_err() {
                    break;
                }
            }
        }
        _ => {
            let (tx, rx) = ipc::channel::<Vec<u8>>().expect("channel");
            let (done_tx, done_rx) = ipc::channel::<u64>().expect("channel");
            boot.send(Boot::Sink(tx, done_rx)).expect("boot");
            let mut n = 0;
            while let Ok(v) = rx.recv() {
                if v.is_empty() {
                    break;
                }
                n += 1;
            }
            let _ = done_tx.send(n);
        }
    }
    true
}

/// What an ipc-channel child hands its parent.
#[derive(serde::Serialize, serde::Deserialize)]
enum Boot {
    Echo(IpcSender<u64>, IpcReceiver<u64>),
    Sink(IpcSender<Vec<u8>>, IpcReceiver<u64>),
}

/// Starts an ipc-channel child in `role`; it and what it sent.
fn ipc_child(role: &str) -> (std::process::Child, Boot) {
    let (server, name) = IpcOneShotServer::<Boot>::new().expect("one-shot server");
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .env(IPC_CHILD, format!("{role}:{name}"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the ipc-channel child");
    let (_, boot) = server.accept().expect("the child's boot message");
    (child, boot)
}

/// Median seconds per round trip of `n` u64s through an ipc-channel echo child.
fn ipc_round_trip(n: usize) -> f64 {
    let (mut child, boot) = ipc_child("echo");
    let Boot::Echo(tx, rx) = boot else {
        unreachable!("an echo child sends Echo")
    };
    let samples = super::measure(n, || {
        tx.send(7).expect("send");
        assert_eq!(rx.recv().expect("recv"), 7);
    });
    drop(tx);
    let _ = child.wait();
    samples.median()
}

/// Seconds to send `n` messages of `size` bytes to an ipc-channel sink child, until it has
/// received them all.
fn ipc_one_way(size: usize, n: usize) -> f64 {
    let (mut child, boot) = ipc_child("sink");
    let Boot::Sink(tx, done) = boot else {
        unreachable!("a sink child sends Sink")
    };
    let data = vec![1_u8; size];
    let t = Instant::now();
    for _ in 0..n {
        tx.send(data.clone()).expect("send");
    }
    tx.send(Vec::new()).expect("the end");
    assert_eq!(done.recv().expect("the count"), n as u64);
    let secs = t.elapsed().as_secs_f64();
    let _ = child.wait();
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One row: both sides' medians over the rounds, and how many times better ours is.
fn versus(name: &str, peer: &str, higher: bool, rounds: &[(f64, f64)]) {
    let ours = median(rounds.iter().map(|r| r.0).collect());
    let theirs = median(rounds.iter().map(|r| r.1).collect());
    let x = if higher { ours / theirs } else { theirs / ours };
    println!("{name:<44} {ours:>10.3e} {theirs:>10.3e} {x:>6.2}x  {peer} (x = times better)");
}

/// `rounds` alternating measurements of ours and the peer's.
fn rounds(
    n: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) -> Vec<(f64, f64)> {
    (0..n).map(|_| (ours(), theirs())).collect()
}

pub(super) fn rows(quick: bool) -> multiproc::Result<()> {
    let r = if quick { 1 } else { 3 };
    let (spawns, trips, small, big) = if quick {
        (50, 2_000, 20_000, 50)
    } else {
        (300, 20_000, 200_000, 500)
    };

    spawn_and_pool_rows(r, spawns, trips, "");
    super::on_one_core(|| spawn_and_pool_rows(r, spawns, trips, ", one core"));

    let trip_rounds = rounds(
        r,
        || multiproc_round_trip(trips).expect("round trip").median() * 1e6,
        || ipc_round_trip(trips) * 1e6,
    );
    versus(
        "small round trip, u64 out, u64 back (µs)",
        "ipc-channel 0.23",
        false,
        &trip_rounds,
    );

    let trip_rounds = super::on_one_core(|| {
        rounds(
            r,
            || multiproc_round_trip(trips).expect("round trip").median() * 1e6,
            || ipc_round_trip(trips) * 1e6,
        )
    });
    versus(
        "small round trip, one core (µs)",
        "ipc-channel 0.23, one core",
        false,
        &trip_rounds,
    );

    let small_rounds = rounds(
        r,
        || small as f64 / one_way(sink_vec, small, || vec![0_u8; 64]).expect("one-way"),
        || small as f64 / ipc_one_way(64, small),
    );
    versus(
        "64 B Vec<u8> one-way (msg/s)",
        "ipc-channel 0.23",
        true,
        &small_rounds,
    );

    let small_rounds = super::on_one_core(|| {
        rounds(
            r,
            || small as f64 / one_way(sink_vec, small, || vec![0_u8; 64]).expect("one-way"),
            || small as f64 / ipc_one_way(64, small),
        )
    });
    versus(
        "64 B Vec<u8> one-way, one core (msg/s)",
        "ipc-channel 0.23, one core",
        true,
        &small_rounds,
    );

    let mib = 1 << 20;
    let data = vec![1_u8; mib];
    let mb = |secs: f64| (big * mib) as f64 / secs / 1e6;
    let big_rounds = rounds(
        r,
        || mb(one_way(sink_vec, big, || data.clone()).expect("one-way")),
        || mb(ipc_one_way(mib, big)),
    );
    versus(
        "1 MiB Vec<u8> one-way (MB/s)",
        "ipc-channel 0.23",
        true,
        &big_rounds,
    );
    let python = super::Python::find().get("queue_large", "py.queue_1MiB.MB_per_s");
    let ours = median(big_rounds.iter().map(|r| r.0).collect());
    super::versus("1 MiB Vec<u8> one-way (MB/s)", ours, python, true);
    Ok(())
}

/// Spawn + join, and one task on a warm pool of 2, beside procspawn's; `suffix` names where
/// they ran.
fn spawn_and_pool_rows(r: usize, spawns: usize, trips: usize, suffix: &str) {
    let spawn_rounds = rounds(
        r,
        || {
            super::measure(spawns, || {
                multiproc::spawn(noop, ())
                    .and_then(|h| h.join())
                    .expect("spawn");
            })
            .median()
                * 1e3
        },
        || {
            super::measure(spawns, || {
                procspawn::spawn((), |()| ()).join().expect("procspawn");
            })
            .median()
                * 1e3
        },
    );
    versus(
        &format!("spawn + join a no-op{suffix} (ms)"),
        &format!("procspawn 1.0{suffix}"),
        false,
        &spawn_rounds,
    );

    let ours_pool = multiproc::Pool::new(2).expect("a pool");
    ours_pool.map(double, 0..2_000).expect("warm-up");
    let their_pool = procspawn::Pool::new(2).expect("a procspawn pool");
    for i in 0..200_u64 {
        their_pool.spawn(i, |x| 2 * x).join().expect("warm-up");
    }
    let mut i = 0_u64;
    let pool_rounds = rounds(
        r,
        || {
            super::measure(trips / 4, || {
                assert_eq!(ours_pool.apply(double, (i,)).expect("apply"), 2 * i);
                i += 1;
            })
            .median()
                * 1e6
        },
        || {
            super::measure(trips / 4, || {
                assert_eq!(
                    their_pool.spawn(21_u64, |x| 2 * x).join().expect("task"),
                    42
                );
            })
            .median()
                * 1e6
        },
    );
    versus(
        &format!("warm Pool(2), one trivial task{suffix} (µs)"),
        &format!("procspawn 1.0{suffix}"),
        false,
        &pool_rounds,
    );
    drop(their_pool);
}
