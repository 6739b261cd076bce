//! multiproc's bench binary: each figure printed side by side with its floor, measured in the
//! same run on the same machine, so only the ratios are meant to be compared across machines.
//!
//! Run: `cargo run --release -p multiproc-bench` (add `-- --quick` for a short run, `--pools`
//! for the pool rows alone, `--curves` to add the scaling curves to a quick run; a full run
//! always prints them).
//!
//! - spawn + join of a no-op `#[process]` vs a bare re-exec of this binary that exits at the
//!   top of `main` (the floor for any re-exec design); the same from a `Zygote` vs a bare
//!   `fork` + `waitpid` of this process (the floor for any fork design);
//! - a small-message round trip (one `u64` there and back) to a child over `multiproc`
//!   channels vs the same ping-pong over a raw `UnixStream` to a child process, and over a raw
//!   `SOCK_SEQPACKET` pair (the socket type multiproc's transport uses);
//! - one-way throughput to a child: 64-byte messages (msg/s), and 1 MiB messages (GB/s) as
//!   `Vec<u8>`, as `Bytes` and as `SharedMemory`, each vs raw `UnixStream` writes of the same
//!   size to a child that reads and discards them.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Bytes, Queue, Receiver, Sender, SharedMemory};

#[cfg(feature = "cluster")]
mod cluster;
mod peers;

const BARE: &str = "MULTIPROC_BENCH_BARE";
const UNIX_ECHO: &str = "MULTIPROC_BENCH_UNIX_ECHO";
const UNIX_SINK: &str = "MULTIPROC_BENCH_UNIX_SINK";
const SEQPACKET_ECHO: &str = "MULTIPROC_BENCH_SEQPACKET_ECHO";
const SEQPACKET_SINK: &str = "MULTIPROC_BENCH_SEQPACKET_SINK";

#[multiproc::process]
fn noop() {}

#[multiproc::process]
fn echo(inbox: Receiver<u64>, outbox: Sender<u64>) -> usize {
    let mut n = 0;
    for v in inbox {
        if outbox.send(v).is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// Receives until every sender is gone, touching one byte per page of each message (so that a
/// shared region is really mapped and read), and returns the bytes received.
fn touch(data: &[u8]) -> usize {
    let touched: usize = data.iter().step_by(4096).map(|&b| usize::from(b)).sum();
    std::hint::black_box(touched);
    data.len()
}

#[multiproc::process]
fn sink_vec(inbox: Receiver<Vec<u8>>) -> usize {
    inbox.into_iter().map(|v| touch(&v)).sum()
}

#[multiproc::process]
fn sink_bytes(inbox: Receiver<Bytes>) -> usize {
    inbox.into_iter().map(|v| touch(&v)).sum()
}

#[multiproc::process]
fn sink_shared(inbox: Receiver<SharedMemory>) -> usize {
    inbox.into_iter().map(|v| touch(&v)).sum()
}

fn main() -> multiproc::Result<()> {
    // The baseline child: exits before anything else runs.
    if std::env::var_os(BARE).is_some() {
        return Ok(());
    }
    if let Some(path) = std::env::var_os(UNIX_ECHO) {
        unix_echo_child(std::path::Path::new(&path));
        return Ok(());
    }
    if let Some(fd) = std::env::var(SEQPACKET_ECHO)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        seqpacket_echo_child(fd);
        return Ok(());
    }
    if let Some(fd) = std::env::var(SEQPACKET_SINK)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        seqpacket_sink_child(fd);
        return Ok(());
    }
    if let Some(path) = std::env::var_os(UNIX_SINK) {
        unix_sink_child(std::path::Path::new(&path));
        return Ok(());
    }
    if peers::child() {
        return Ok(());
    }
    // procspawn's children come back here: they run their closure and exit in `init`.
    procspawn::init();
    multiproc::init();

    let quick = std::env::args().any(|a| a == "--quick");
    if let Some(flag) = std::env::args().find(|a| a.ends_with("-loop")) {
        return profile_loop(&flag);
    }
    #[cfg(feature = "cluster")]
    if std::env::args().any(|a| a == "--cluster") {
        // Only the cluster rows (with the node-count curve unless --quick).
        return cluster::rows(quick);
    }
    if std::env::args().any(|a| a == "--peers") {
        // Only the rows beside procspawn and ipc-channel.
        return peers::rows(quick);
    }
    if std::env::args().any(|a| a == "--pools") {
        // Only the pool rows: for profiling them.
        return pools(quick, if quick { 2_000 } else { 20_000 });
    }
    let (spawns, trips) = if quick { (50, 2_000) } else { (300, 20_000) };
    println!(
        "multiproc bench ({} mode): {} spawns, {} round trips; median (mean) per operation\n",
        if quick { "quick" } else { "full" },
        spawns,
        trips
    );
    println!(
        "{:<34} {:>18} {:>18} {:>7}  baseline",
        "benchmark", "multiproc", "baseline", "ratio"
    );

    let exe = std::env::current_exe().expect("current exe");
    // Interleaved, so that drift in the machine's load hits both sides alike.
    let (ours, bare) = measure_pair(
        spawns,
        || {
            multiproc::spawn(noop, ())
                .and_then(|h| h.join())
                .expect("spawn + join");
        },
        || {
            let status = Command::new(&exe)
                .env(BARE, "1")
                .stdin(Stdio::null())
                .status()
                .expect("bare re-exec");
            assert!(status.success());
        },
    );
    row(
        "spawn + join no-op (ms)",
        &ours,
        &bare,
        1e3,
        "bare re-exec of self",
    );

    let zygote = multiproc::Zygote::start()?;
    let forked = multiproc::Builder::new().zygote(&zygote);
    let (ours, bare) = measure_pair(
        spawns,
        || {
            forked
                .spawn_fn(noop, ())
                .and_then(|h| h.join())
                .expect("spawn + join from the zygote");
        },
        bare_fork,
    );
    row(
        "same, from a Zygote (ms)",
        &ours,
        &bare,
        1e3,
        "bare fork + waitpid, no exec",
    );
    let faults = |op: &mut dyn FnMut()| {
        let before = child_minor_faults();
        for _ in 0..20 {
            op();
        }
        (child_minor_faults() - before) as f64 / 20.0
    };
    let ours_faults = faults(&mut || {
        forked
            .spawn_fn(noop, ())
            .and_then(|h| h.join())
            .expect("spawn + join from the zygote");
    });
    let bare_faults = faults(&mut bare_fork);
    println!(
        "{:<34} {:>18.0} {:>18.0}          (each child copies the pages it writes to)",
        "  minor page faults per child", ours_faults, bare_faults
    );
    drop(zygote);
    if std::env::args().any(|a| a == "--spawn") {
        // Only the spawn rows: for profiling them.
        return Ok(());
    }

    let ours = multiproc_round_trip(trips)?;
    let raw = unix_round_trip(&exe, trips);
    row(
        "round trip, one u64 (µs)",
        &ours,
        &raw,
        1e6,
        "raw UnixStream pair",
    );
    let raw = seqpacket_round_trip(&exe, trips);
    row(
        "round trip, one u64 (µs)",
        &ours,
        &raw,
        1e6,
        "raw SOCK_SEQPACKET pair",
    );

    let (ours, raw) = on_one_core(|| -> multiproc::Result<_> {
        let ours = multiproc_round_trip(trips)?;
        Ok((ours, seqpacket_round_trip(&exe, trips)))
    })?;
    row(
        "round trip, one u64, one core (µs)",
        &ours,
        &raw,
        1e6,
        "raw SOCK_SEQPACKET pair, one core",
    );

    println!();
    let (small, big) = if quick { (20_000, 50) } else { (200_000, 500) };
    let raw = unix_one_way(&exe, 64, small);
    let ours = one_way(sink_vec, small, || vec![0_u8; 64])?;
    rate(
        "64 B one-way, Vec<u8> (msg/s)",
        small as f64 / ours,
        small as f64 / raw,
    );
    let ours = one_way(sink_bytes, small, || Bytes::from(vec![0_u8; 64]))?;
    rate(
        "64 B one-way, Bytes (msg/s)",
        small as f64 / ours,
        small as f64 / raw,
    );
    let datagrams = seqpacket_one_way(&exe, 64, small);
    rate_vs(
        "64 B one-way, Bytes (msg/s)",
        small as f64 / ours,
        small as f64 / datagrams,
        "raw SOCK_SEQPACKET sends",
    );
    let (ours, datagrams) = on_one_core(|| -> multiproc::Result<_> {
        let ours = one_way(sink_bytes, small, || Bytes::from(vec![0_u8; 64]))?;
        Ok((ours, seqpacket_one_way(&exe, 64, small)))
    })?;
    rate_vs(
        "64 B one-way, Bytes, one core (msg/s)",
        small as f64 / ours,
        small as f64 / datagrams,
        "raw SOCK_SEQPACKET sends, one core",
    );
    let many = small * 10;
    let buffered = unix_one_way_buffered(&exe, 64, many);
    let ours = one_way_batched(sink_bytes, many, 1_000, || Bytes::from(vec![0_u8; 64]))?;
    rate_vs(
        "64 B one-way, Bytes, send_many (msg/s)",
        many as f64 / ours,
        many as f64 / buffered,
        "buffered UnixStream writes",
    );

    let mib = 1 << 20;
    let gb = |secs: f64| (big * mib) as f64 / secs / 1e9;
    let raw = gb(unix_one_way(&exe, mib, big));
    // Each message is a fresh copy of one prepared buffer (as the raw writes reuse theirs),
    // so that making the data is not what is measured.
    let data = vec![1_u8; mib];
    let ours = gb(one_way(sink_vec, big, || data.clone())?);
    rate("1 MiB one-way, Vec<u8> (GB/s)", ours, raw);
    let ours = gb(one_way(sink_bytes, big, || Bytes::from(data.as_slice()))?);
    rate("1 MiB one-way, Bytes (GB/s)", ours, raw);
    let (pinned, pinned_raw) = on_one_core(|| -> multiproc::Result<_> {
        let raw = gb(unix_one_way(&exe, mib, big));
        Ok((
            gb(one_way(sink_bytes, big, || Bytes::from(data.as_slice()))?),
            raw,
        ))
    })?;
    rate_vs(
        "1 MiB one-way, Bytes, one core (GB/s)",
        pinned,
        pinned_raw,
        "raw UnixStream writes, one core",
    );
    let region = SharedMemory::from_bytes(&data)?;
    let ours = gb(one_way(sink_shared, big, || region.clone())?);
    rate("1 MiB one-way, SharedMemory re-sent (GB/s)", ours, raw);
    let ours = gb(one_way(sink_shared, big, || {
        SharedMemory::from_bytes(&data).expect("a fresh region")
    })?);
    rate("1 MiB one-way, fresh SharedMemory (GB/s)", ours, raw);

    println!();
    queues(quick)?;

    println!();
    pools(quick, trips)?;

    println!();
    peers::rows(quick)?;
    #[cfg(feature = "cluster")]
    {
        println!();
        cluster::rows(quick)?;
    }
    if !quick || std::env::args().any(|a| a == "--curves") {
        println!();
        curves()?;
    }
    Ok(())
}

#[multiproc::process]
fn echo_bytes(inbox: Receiver<Bytes>, outbox: Sender<Bytes>) {
    for v in inbox {
        if outbox.send(v).is_err() {
            break;
        }
    }
}

#[multiproc::process]
fn hold(until: Receiver<()>) {
    let _ = until.recv();
}

/// This process's resident bytes now, after resetting its high-water mark to them
/// (`/proc/self/clear_refs`, Linux 4.0+).
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_bytes("VmRSS:")
}

/// This process's resident high-water mark in bytes.
fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

/// A `/proc/self/status` line's figure (kB) in bytes; 0 if it cannot be read.
fn status_bytes(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// How costs grow: pool throughput by workers and by task count (with the caller's memory per
/// task), round trip by payload size, spawn time by the number of live children.
fn curves() -> multiproc::Result<()> {
    println!(
        "scaling curves (this machine has {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<44} {:>14} {:>14}",
        "pool workers", "trivial /s", "0.5 ms CPU /s"
    );
    let per_task = 100_000_u64; // iterations of `burn`, calibrated below to ~0.5 ms
    let t = Instant::now();
    std::hint::black_box(burn(per_task));
    let iterations = (per_task as f64 * 0.0005 / t.elapsed().as_secs_f64().max(1e-9)) as u64;
    for workers in [1, 2, 4, 8] {
        let pool = multiproc::Pool::new(workers)?;
        pool.map(double, 0..1_000)?;
        let t = Instant::now();
        pool.map(double, 0..100_000)?;
        let trivial = 100_000.0 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        pool.map(burn, vec![iterations; 400])?;
        let cpu = 400.0 / t.elapsed().as_secs_f64();
        println!(
            "{:<44} {trivial:>14.3e} {cpu:>14.1}",
            format!("{workers} workers")
        );
    }

    // Throughput by the size of one call (linear means flat), and what the caller holds per
    // task at its peak (its high-water mark, reset before each call, over the task count;
    // the result vector's 8 bytes per task included).
    println!(
        "{:<44} {:>14} {:>14}",
        "Pool(2).map by task count", "trivial /s", "peak B/task"
    );
    let pool = multiproc::Pool::new(2)?;
    pool.map(double, 0..1_000)?;
    for n in [1_000_u64, 10_000, 100_000, 1_000_000] {
        let before = reset_peak_rss();
        let t = Instant::now();
        let out = pool.map(double, 0..n)?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let grown = peak_rss().saturating_sub(before);
        assert_eq!(out.len(), n as usize);
        drop(out);
        println!(
            "{:<44} {rate:>14.3e} {:>14.0}",
            format!("{n} tasks"),
            grown as f64 / n as f64
        );
    }
    drop(pool);

    println!(
        "{:<44} {:>14} {:>14}",
        "round trip by payload (Bytes)", "µs median", "GB/s"
    );
    let (tx, inbox) = multiproc::channel::<Bytes>()?;
    let (outbox, rx) = multiproc::channel::<Bytes>()?;
    let child = multiproc::spawn(echo_bytes, (inbox, outbox))?;
    for (size, n) in [
        (8, 2_000),
        (1 << 10, 2_000),
        (64 << 10, 500),
        (1 << 20, 100),
        (16 << 20, 10),
        (64 << 20, 4),
    ] {
        let payload = Bytes::from(vec![1_u8; size]);
        let samples = measure(n, || {
            tx.send(payload.clone()).expect("send");
            assert_eq!(rx.recv().expect("recv").len(), size);
        });
        let secs = samples.median();
        println!(
            "{:<44} {:>14.1} {:>14.3}",
            format!("{size} B"),
            secs * 1e6,
            2.0 * size as f64 / secs / 1e9
        );
    }
    drop(tx);
    child.join()?;

    println!(
        "{:<44} {:>14}",
        "spawn + join with live children", "ms median"
    );
    let (stop, until) = multiproc::channel::<()>()?;
    let _ = stop;
    let mut live = Vec::new();
    let mut stops = Vec::new();
    for target in [1, 10, 100] {
        while live.len() < target {
            let (tx, rx) = multiproc::channel::<()>()?;
            live.push(multiproc::spawn(hold, (rx,))?);
            stops.push(tx);
        }
        let samples = measure(20, || {
            multiproc::spawn(noop, ())
                .and_then(|h| h.join())
                .expect("spawn + join");
        });
        println!(
            "{:<44} {:>14.2}",
            format!("{target} live"),
            samples.median() * 1e3
        );
    }
    drop(stops);
    drop(until);
    for h in live {
        h.join()?;
    }

    // A fork copies the parent's page tables; posix_spawn (what multiproc uses) and a fork
    // of the small zygote do not care how big the parent is.
    println!(
        "{:<44} {:>14} {:>14} {:>14}",
        "spawn + join by parent size", "ms spawn", "ms zygote", "ms bare fork"
    );
    let zygote = multiproc::Zygote::start()?;
    let forked = multiproc::Builder::new().zygote(&zygote);
    for mib in [0_usize, 256, 1024] {
        let ballast = vec![1_u8; mib << 20];
        let spawn = measure(20, || {
            multiproc::spawn(noop, ())
                .and_then(|h| h.join())
                .expect("spawn + join");
        });
        let from_zygote = measure(20, || {
            forked
                .spawn_fn(noop, ())
                .and_then(|h| h.join())
                .expect("spawn + join from the zygote");
        });
        let fork = measure(20, bare_fork);
        println!(
            "{:<44} {:>14.2} {:>14.2} {:>14.2}",
            format!("parent holding {mib} MiB more"),
            spawn.median() * 1e3,
            from_zygote.median() * 1e3,
            fork.median() * 1e3
        );
        drop(ballast);
    }
    Ok(())
}

#[multiproc::process]
fn double(x: u64) -> u64 {
    x * 2
}

/// About `iterations` additions that the optimizer cannot fold: the CPU-bound task.
#[multiproc::process]
fn burn(iterations: u64) -> u64 {
    let mut x = 0_u64;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_add(i));
    }
    x
}

/// The pool rows, each beside Python's `multiprocessing.Pool(2)` measured by
/// bench/mp_bench.py in the same run (when `python3` and the script are there).
fn pools(quick: bool, trips: usize) -> multiproc::Result<()> {
    let pool = multiproc::Pool::new(2)?;
    pool.map(double, 0..2_000)?; // warm-up
    let python = Python::find();

    let mut i = 0_u64;
    let ours = measure(trips / 4, || {
        assert_eq!(pool.apply(double, (i,)).expect("apply"), 2 * i);
        i += 1;
    });
    let py = python.get("pool_apply", "py.pool_apply_roundtrip.median");
    versus(
        "warm Pool(2), one trivial task (µs)",
        ours.median() * 1e6,
        py,
        false,
    );

    let n = if quick { 20_000 } else { 100_000 };
    let unchunked = multiproc::Pool::builder().workers(2).chunksize(1).build()?;
    unchunked.map(double, 0..2_000)?;
    let t = Instant::now();
    let out = unchunked.map(double, 0..n)?;
    let ours = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(out[n as usize - 1], 2 * (n - 1));
    let py = python.get("pool_map_c1", "py.pool_map_trivial_chunksize1.msgs_per_s");
    versus("Pool(2) trivial tasks, chunksize 1 (/s)", ours, py, true);

    // The first map of a new pool on each side (after the same warm-up of 2,000), three
    // rounds alternating between the two, medians: one first call each swung the ratio by
    // half across runs on this machine.
    let n = 200_000_u64;
    let (mut ours, mut py) = (Vec::new(), Vec::new());
    for _ in 0..if quick { 1 } else { 3 } {
        let fresh = multiproc::Pool::new(2)?;
        fresh.map(double, 0..2_000)?;
        let t = Instant::now();
        let out = fresh.map(double, 0..n)?;
        ours.push(n as f64 / t.elapsed().as_secs_f64());
        assert_eq!(out.len(), n as usize);
        drop(fresh);
        py.extend(python.get("pool_map", "py.pool_map_trivial_default_chunks.msgs_per_s"));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    versus(
        "Pool(2).map, 200k trivial, auto chunks (/s)",
        median(ours).expect("a round"),
        median(py),
        true,
    );

    // ~5 ms of CPU per task, calibrated here; 200 tasks on 2 workers.
    let mut iterations = 100_000_u64;
    let per = |iterations: u64| {
        let t = Instant::now();
        std::hint::black_box(burn(iterations));
        t.elapsed().as_secs_f64()
    };
    while per(iterations) < 0.02 {
        iterations *= 2;
    }
    iterations = (iterations as f64 * 0.005 / per(iterations)) as u64;
    let serial = || {
        let mut ts: Vec<f64> = (0..20).map(|_| per(iterations)).collect();
        ts.sort_by(f64::total_cmp);
        ts[10]
    };
    let before = serial();
    let t = Instant::now();
    pool.map(burn, vec![iterations; 200])?;
    let wall = t.elapsed().as_secs_f64();
    let per_task = before.min(serial());
    let efficiency = 200.0 * per_task / 2.0 / wall;
    let py = python.get("pool_cpu", "py.pool_cpu.efficiency");
    versus("Pool(2), 200 x 5 ms CPU, efficiency", efficiency, py, true);
    Ok(())
}

/// One row against Python's figure; `higher` says which way is better.
#[multiproc::process]
fn drain_queue(queue: Queue<Bytes>, ready: Sender<()>) -> usize {
    ready.send(()).expect("the bench waits for this");
    queue.iter().count()
}

/// Seconds to put `n` items made by `make` into a queue (with `maxsize`, if any) that a child
/// drains, until it has taken them all. Starts once the child is waiting on the queue.
fn queue_one_way(
    n: usize,
    maxsize: Option<usize>,
    mut make: impl FnMut() -> Bytes,
) -> multiproc::Result<f64> {
    let queue = match maxsize {
        Some(max) => Queue::with_maxsize(max)?,
        None => Queue::new()?,
    };
    let (ready_tx, ready_rx) = multiproc::channel::<()>()?;
    let child = multiproc::spawn(drain_queue, (queue.clone(), ready_tx))?;
    ready_rx.recv()?;
    let t = Instant::now();
    for _ in 0..n {
        queue.put(make())?;
    }
    queue.close()?;
    let taken = child.join()?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(taken, n);
    Ok(secs)
}

/// A `Queue` from a producer to a consumer process, beside Python's `multiprocessing.Queue`
/// on the same workload (Python's producer is the child, ours the parent).
fn queues(quick: bool) -> multiproc::Result<()> {
    let python = Python::find();
    let small = if quick { 20_000 } else { 200_000 };
    let ours = queue_one_way(small, None, || Bytes::from(vec![0_u8; 64]))?;
    let py = python.get("queue_small", "py.queue_64B.msgs_per_s");
    versus(
        "Queue one-way, 64 B Bytes (msg/s)",
        small as f64 / ours,
        py,
        true,
    );
    if !quick {
        let mib = 1 << 20;
        let data = vec![1_u8; mib];
        let big = 2_000;
        let ours = queue_one_way(big, Some(64), || Bytes::from(data.as_slice()))?;
        let py = python.get("queue_large", "py.queue_1MiB.MB_per_s");
        versus(
            "Queue one-way, 1 MiB Bytes (MB/s)",
            (big * mib) as f64 / ours / 1e6,
            py,
            true,
        );
    }
    Ok(())
}

fn versus(name: &str, ours: f64, python: Option<f64>, higher: bool) {
    match python {
        Some(py) => {
            let better = if higher { ours / py } else { py / ours };
            println!(
                "{name:<44} {ours:>10.3e} {py:>10.3e} {better:>6.2}x  Python multiprocessing (x = times better)"
            );
        }
        None => println!(
            "{name:<44} {ours:>10.3e} {:>10}         (python3 or mp_bench.py missing)",
            "-"
        ),
    }
}

/// Runs bench/mp_bench.py tests, when the interpreter and the script are there.
struct Python {
    script: Option<PathBuf>,
}

impl Python {
    fn find() -> Python {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mp_bench.py");
        let works = script.exists()
            && Command::new("python3")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        Python {
            script: works.then_some(script),
        }
    }

    /// The value of `key` printed by `mp_bench.py test`.
    fn get(&self, test: &str, key: &str) -> Option<f64> {
        let script = self.script.as_ref()?;
        let out = Command::new("python3")
            .arg(script)
            .arg(test)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("RESULT") && words.next() == Some(key))
                    .then(|| words.next()?.parse().ok())
                    .flatten()
            })
    }
}

/// Seconds to send `n` messages made by `make` to a child running `sink`, until it has
/// received them all.
fn one_way<T, F>(sink: F, n: usize, mut make: impl FnMut() -> T) -> multiproc::Result<f64>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: multiproc::ProcessFn<(Receiver<T>,), Output = usize>,
{
    stream_to(sink, |tx| (0..n).try_for_each(|_| tx.send(make())))
}

/// As [`one_way`], handing the messages to `send_many` in groups of `group`.
fn one_way_batched<T, F>(
    sink: F,
    n: usize,
    group: usize,
    mut make: impl FnMut() -> T,
) -> multiproc::Result<f64>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: multiproc::ProcessFn<(Receiver<T>,), Output = usize>,
{
    stream_to(sink, |tx| {
        (0..n / group).try_for_each(|_| tx.send_many((0..group).map(|_| make())))
    })
}

/// Seconds for `feed` to send to a child running `sink`, until the child has received all.
fn stream_to<T, F>(
    sink: F,
    feed: impl FnOnce(&Sender<T>) -> multiproc::Result<()>,
) -> multiproc::Result<f64>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: multiproc::ProcessFn<(Receiver<T>,), Output = usize>,
{
    let (tx, rx) = multiproc::channel::<T>()?;
    let child = multiproc::spawn(sink, (rx,))?;
    let t = Instant::now();
    feed(&tx)?;
    drop(tx);
    let received = child.join()?;
    let secs = t.elapsed().as_secs_f64();
    assert!(received > 0);
    Ok(secs)
}

/// Seconds to write `n` messages of `size` bytes over a `UnixStream` to a child that reads and
/// discards them, until it has read them all.
fn unix_one_way(exe: &std::path::Path, size: usize, n: usize) -> f64 {
    unix_one_way_with(exe, size, n, false)
}

/// As [`unix_one_way`], through a 64 KiB `BufWriter`: the floor for batched small messages.
fn unix_one_way_buffered(exe: &std::path::Path, size: usize, n: usize) -> f64 {
    unix_one_way_with(exe, size, n, true)
}

fn unix_one_way_with(exe: &std::path::Path, size: usize, n: usize, buffered: bool) -> f64 {
    let (mut child, stream, dir) = unix_child(exe, UNIX_SINK);
    let buf = vec![0_u8; size];
    let t = Instant::now();
    let mut stream = if buffered {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stream);
        for _ in 0..n {
            w.write_all(&buf).expect("write");
        }
        w.into_inner().expect("flush")
    } else {
        let mut stream = stream;
        for _ in 0..n {
            stream.write_all(&buf).expect("write");
        }
        stream
    };
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut total = [0_u8; 8];
    stream.read_exact(&mut total).expect("total");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(u64::from_le_bytes(total), (size * n) as u64);
    child.wait().expect("sink child");
    let _ = std::fs::remove_dir_all(&dir);
    secs
}

fn unix_sink_child(path: &std::path::Path) {
    let mut stream = UnixStream::connect(path).expect("connect");
    let mut buf = vec![0_u8; 1 << 16];
    let mut total = 0_u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = stream.write_all(&total.to_le_bytes());
}

fn rate(name: &str, ours: f64, base: f64) {
    rate_vs(name, ours, base, "raw UnixStream writes");
}

fn rate_vs(name: &str, ours: f64, base: f64, baseline: &str) {
    println!(
        "{:<44} {:>10.3e} {:>10.3e} {:>6.2}x  {baseline}",
        name,
        ours,
        base,
        ours / base
    );
}

/// Per-operation samples, sorted.
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> f64 {
        self.0[self.0.len() / 2].as_secs_f64()
    }
    fn mean(&self) -> f64 {
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() / self.0.len() as f64
    }
}

fn measure(n: usize, mut op: impl FnMut()) -> Samples {
    op(); // warm-up: lazy statics, page cache
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed()
        })
        .collect();
    samples.sort();
    Samples(samples)
}

fn measure_pair(n: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (Samples, Samples) {
    a();
    b();
    let mut sa = Vec::with_capacity(n);
    let mut sb = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a();
        sa.push(t.elapsed());
        let t = Instant::now();
        b();
        sb.push(t.elapsed());
    }
    sa.sort();
    sb.sort();
    (Samples(sa), Samples(sb))
}

fn row(name: &str, ours: &Samples, base: &Samples, scale: f64, what: &str) {
    let fmt = |s: &Samples| format!("{:.2} ({:.2})", s.median() * scale, s.mean() * scale);
    println!(
        "{:<34} {:>18} {:>18} {:>6.2}x  {what}",
        name,
        fmt(ours),
        fmt(base),
        ours.median() / base.median()
    );
}

fn multiproc_round_trip(n: usize) -> multiproc::Result<Samples> {
    let (to_child, inbox) = multiproc::channel::<u64>()?;
    let (outbox, from_child) = multiproc::channel::<u64>()?;
    let child = multiproc::spawn(echo, (inbox, outbox))?;
    let mut i = 0_u64;
    let samples = measure(n, || {
        to_child.send(i).expect("send");
        assert_eq!(from_child.recv().expect("recv"), i);
        i += 1;
    });
    drop(to_child);
    child.join()?;
    Ok(samples)
}

/// Runs `f` with every thread of this process, and so every process and thread they start
/// meanwhile, on one core (the first this process may use), then gives the threads back the
/// cores they had. On a machine whose scheduler moves a ping-pong's two ends between cores
/// at will (a round trip here swings several-fold with their placement), this puts both
/// sides of a comparison in the same place: the rows it measures compare code, not luck.
fn on_one_core<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut had: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `had` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut had) };
    assert_eq!(rc, 0, "sched_getaffinity");
    let first = (0..libc::CPU_SETSIZE as usize)
        .find(|&cpu| {
            // SAFETY: cpu is below CPU_SETSIZE; `had` is a valid set.
            unsafe { libc::CPU_ISSET(cpu, &had) }
        })
        .expect("a usable core");
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: first is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(first, &mut one) };
    let set_all = |set: &libc::cpu_set_t| {
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let tid: libc::pid_t = task
                .expect("a task")
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("a thread id");
            // SAFETY: `set` is a valid cpu_set_t of the size passed; a thread that has just
            // ended makes this fail harmlessly (ESRCH).
            unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), set) };
        }
    };
    set_all(&one);
    let out = f();
    set_all(&had);
    out
}

/// Re-runs this binary with `role` set to a socket path, and accepts its connection: the
/// baseline child. Returns the child, the stream and the temporary directory to remove.
/// Repeats one workload for `perf record`, printing its rate each round: `--map-loop`,
/// `--first-map-loop`, `--chunksize1-loop`, `--apply-loop`, `--trip-loop`, `--raw-trip-loop`, `--small-loop`,
/// `--raw-small-loop`, `--many-loop`, `--bytes-loop`.
fn profile_loop(flag: &str) -> multiproc::Result<()> {
    // Rounds, work per round, its unit, and one round's duration in seconds.
    let repeat = |rounds: usize,
                  work: f64,
                  unit: &str,
                  round: &mut dyn FnMut() -> multiproc::Result<f64>|
     -> multiproc::Result<()> {
        for _ in 0..rounds {
            println!("{:.3e} {unit}", work / round()?);
        }
        Ok(())
    };
    let timed = |f: &mut dyn FnMut() -> multiproc::Result<()>| {
        let t = Instant::now();
        f().map(|()| t.elapsed().as_secs_f64())
    };
    match flag {
        // Pool.map of 200k trivial tasks: the pool's per-task path.
        "--map-loop" => {
            let pool = multiproc::Pool::new(2)?;
            repeat(20, 200_000.0, "tasks/s", &mut || {
                timed(&mut || pool.map(double, 0..200_000_u64).map(drop))
            })
        }
        // A new pool's first map of 200k after the warm-up and the applies the full run gives
        // it, then its second: what a first call costs beyond a warm one.
        "--first-map-loop" => {
            for _ in 0..8 {
                let pool = multiproc::Pool::new(2)?;
                pool.map(double, 0..2_000)?;
                (0..5_000_u64).try_for_each(|i| pool.apply(double, (i,)).map(drop))?;
                let first = timed(&mut || pool.map(double, 0..200_000_u64).map(drop))?;
                let second = timed(&mut || pool.map(double, 0..200_000_u64).map(drop))?;
                println!(
                    "{:.3e} {:.3e} tasks/s (first, second)",
                    2e5 / first,
                    2e5 / second
                );
            }
            Ok(())
        }
        // The same with one task per chunk: the per-chunk path.
        "--chunksize1-loop" => {
            let pool = multiproc::Pool::builder().workers(2).chunksize(1).build()?;
            repeat(10, 50_000.0, "tasks/s", &mut || {
                timed(&mut || pool.map(double, 0..50_000_u64).map(drop))
            })
        }
        // One task at a time on a warm pool: the direct path.
        "--apply-loop" => {
            let pool = multiproc::Pool::new(2)?;
            pool.map(double, 0..2_000)?;
            repeat(10, 100_000.0, "tasks/s", &mut || {
                timed(&mut || (0..100_000_u64).try_for_each(|i| pool.apply(double, (i,)).map(drop)))
            })
        }
        // A u64 to a child and back, one at a time.
        "--trip-loop" => repeat(10, 100_000.0, "trips/s", &mut || {
            timed(&mut || multiproc_round_trip(100_000).map(drop))
        }),
        // The floor of the two above: the same over a raw SOCK_SEQPACKET pair.
        "--raw-trip-loop" => {
            let exe = std::env::current_exe()?;
            repeat(10, 100_000.0, "trips/s", &mut || {
                timed(&mut || {
                    seqpacket_round_trip(&exe, 100_000);
                    Ok(())
                })
            })
        }
        // 64 B Bytes one-way, one message at a time.
        "--small-loop" => repeat(10, 200_000.0, "msg/s", &mut || {
            one_way(sink_bytes, 200_000, || Bytes::from(vec![0_u8; 64]))
        }),
        // The floor of the above: 64 B datagrams over a raw SOCK_SEQPACKET pair.
        "--raw-small-loop" => {
            let exe = std::env::current_exe()?;
            repeat(10, 200_000.0, "msg/s", &mut || {
                Ok(seqpacket_one_way(&exe, 64, 200_000))
            })
        }
        // The same with send_many.
        "--many-loop" => repeat(10, 2e6, "msg/s", &mut || {
            one_way_batched(sink_bytes, 2_000_000, 1_000, || Bytes::from(vec![0_u8; 64]))
        }),
        // 1 MiB Bytes one-way: large messages.
        "--bytes-loop" => {
            let data = vec![1_u8; 1 << 20];
            repeat(10, (500 << 20) as f64 / 1e9, "GB/s", &mut || {
                one_way(sink_bytes, 500, || Bytes::from(data.as_slice()))
            })
        }
        other => Err(multiproc::Error::other(format!(
            "unknown flag {other}: the loops are --map-loop, --first-map-loop, --chunksize1-loop, \
             --apply-loop, --trip-loop, --raw-trip-loop, --small-loop, --raw-small-loop, \
             --many-loop and --bytes-loop"
        ))),
    }
}

/// Minor page faults of all reaped children so far.
fn child_minor_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_minflt
}

/// The floor of a zygote start: fork a child that exits at once, and reap it.
fn bare_fork() {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waitpid writes the status of our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
}

fn unix_child(exe: &std::path::Path, role: &str) -> (std::process::Child, UnixStream, PathBuf) {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("baseline.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let child = Command::new(exe)
        .env(role, &path)
        .spawn()
        .expect("baseline child");
    let (stream, _) = listener.accept().expect("accept");
    // The child is connected: the socket file is no longer needed.
    let _ = std::fs::remove_file(&path);
    (child, stream, dir)
}

fn unix_round_trip(exe: &std::path::Path, n: usize) -> Samples {
    let (mut child, mut stream, dir) = unix_child(exe, UNIX_ECHO);
    let mut buf = [0_u8; 8];
    let mut i = 0_u64;
    let samples = measure(n, || {
        stream.write_all(&i.to_le_bytes()).expect("write");
        stream.read_exact(&mut buf).expect("read");
        assert_eq!(u64::from_le_bytes(buf), i);
        i += 1;
    });
    drop(stream);
    child.wait().expect("echo child");
    let _ = std::fs::remove_dir_all(&dir);
    samples
}

/// The same ping-pong over a raw `SOCK_SEQPACKET` pair, one `send` and one `recv` per message.
/// A child of this binary in `role` (an env var set to the number of its end of a new
/// `SOCK_SEQPACKET` pair); returns it and our end.
fn seqpacket_child(
    exe: &std::path::Path,
    role: &str,
) -> (std::process::Child, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair");
    // SAFETY: both descriptors are new and ours.
    let (mine, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.env(role, child_fd.to_string());
    // SAFETY: fcntl is async-signal-safe; it lets only this child inherit the socket.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(child_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("seqpacket child");
    drop(theirs);
    (child, mine)
}

/// `n` datagrams of `size` bytes, one `send` each, to a child that reads and counts them.
fn seqpacket_one_way(exe: &std::path::Path, size: usize, n: usize) -> f64 {
    use std::os::fd::AsRawFd;
    let (mut child, mine) = seqpacket_child(exe, SEQPACKET_SINK);
    let buf = vec![0_u8; size];
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: a plain send on our socket from a buffer that outlives it.
        let sent = unsafe { libc::send(mine.as_raw_fd(), buf.as_ptr().cast(), size, 0) };
        assert_eq!(sent, size as isize);
    }
    // SAFETY: shutdown of our own socket: the child reads end-of-file after the data.
    unsafe { libc::shutdown(mine.as_raw_fd(), libc::SHUT_WR) };
    let mut total = [0_u8; 8];
    // SAFETY: a plain recv into a buffer that outlives it.
    let got = unsafe { libc::recv(mine.as_raw_fd(), total.as_mut_ptr().cast(), 8, 0) };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, 8);
    assert_eq!(u64::from_le_bytes(total), (size * n) as u64);
    child.wait().expect("seqpacket sink");
    secs
}

fn seqpacket_sink_child(fd: i32) {
    let mut buf = vec![0_u8; 1 << 16];
    let mut total = 0_u64;
    loop {
        // SAFETY: a plain recv on the inherited socket.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        total += n as u64;
    }
    // SAFETY: as above.
    unsafe { libc::send(fd, total.to_le_bytes().as_ptr().cast(), 8, 0) };
}

fn seqpacket_round_trip(exe: &std::path::Path, n: usize) -> Samples {
    use std::os::fd::AsRawFd;
    let (mut child, mine) = seqpacket_child(exe, SEQPACKET_ECHO);
    let mut buf = [0_u8; 64];
    let mut i = 0_u64;
    let samples = measure(n, || {
        let out = i.to_le_bytes();
        // SAFETY: plain send/recv on our socket with buffers that outlive the calls.
        unsafe {
            assert_eq!(libc::send(mine.as_raw_fd(), out.as_ptr().cast(), 8, 0), 8);
            assert_eq!(
                libc::recv(mine.as_raw_fd(), buf.as_mut_ptr().cast(), 64, 0),
                8
            );
        }
        assert_eq!(buf[..8], out);
        i += 1;
    });
    drop(mine);
    child.wait().expect("seqpacket child");
    samples
}

fn seqpacket_echo_child(fd: i32) {
    let mut buf = [0_u8; 64];
    loop {
        // SAFETY: plain recv/send on the inherited socket.
        unsafe {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n <= 0 || libc::send(fd, buf.as_ptr().cast(), n as usize, 0) != n {
                return;
            }
        }
    }
}

fn unix_echo_child(path: &std::path::Path) {
    let mut stream = UnixStream::connect(path).expect("connect");
    let mut buf = [0_u8; 8];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
}
