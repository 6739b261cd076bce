//! multiproc's bench binary: each figure printed side by side with its floor, measured in the
//! same run on the same machine, so only the ratios are meant to be compared across machines.
//!
//! Run: `cargo run --release -p multiproc-bench` (add `-- --quick` for a short run).
//!
//! - spawn + join of a no-op `#[process]` vs a bare re-exec of this binary that exits at the
//!   top of `main` (the floor for any re-exec design);
//! - a small-message round trip (one `u64` there and back) to a child over `multiproc`
//!   channels vs the same ping-pong over a raw `UnixStream` to a child process.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Receiver, Sender};

const BARE: &str = "MULTIPROC_BENCH_BARE";
const UNIX_ECHO: &str = "MULTIPROC_BENCH_UNIX_ECHO";

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

fn main() -> multiproc::Result<()> {
    // The baseline child: exits before anything else runs.
    if std::env::var_os(BARE).is_some() {
        return Ok(());
    }
    if let Some(path) = std::env::var_os(UNIX_ECHO) {
        unix_echo_child(std::path::Path::new(&path));
        return Ok(());
    }
    multiproc::init();

    let quick = std::env::args().any(|a| a == "--quick");
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

    let ours = multiproc_round_trip(trips)?;
    let raw = unix_round_trip(&exe, trips);
    row(
        "round trip, one u64 (µs)",
        &ours,
        &raw,
        1e6,
        "raw UnixStream pair",
    );
    Ok(())
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

fn unix_round_trip(exe: &std::path::Path, n: usize) -> Samples {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("echo.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut child = Command::new(exe)
        .env(UNIX_ECHO, &path)
        .spawn()
        .expect("echo child");
    let (mut stream, _) = listener.accept().expect("accept");
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

fn unix_echo_child(path: &std::path::Path) {
    let mut stream = UnixStream::connect(path).expect("connect");
    let mut buf = [0_u8; 8];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
}
