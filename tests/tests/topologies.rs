//! Runs every example under a deadline and checks its exit status and output.

mod support;

fn run(path: &str) -> support::Output {
    let out = support::run_bin(path, |_| {});
    assert!(
        out.status.success(),
        "{path} failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

#[test]
fn clock_function() {
    let out = run(env!("CARGO_BIN_EXE_clock_function"));
    let ticks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("tick "))
        .collect();
    assert_eq!(ticks.len(), 5, "{}", out.stdout);
    let pid = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    assert!(
        ticks
            .iter()
            .all(|t| t.ends_with(&format!("from pid {pid}"))),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("clock returned 5\n"), "{}", out.stdout);
}

#[test]
fn clock_process() {
    let out = run(env!("CARGO_BIN_EXE_clock_process"));
    let mut pids = std::collections::BTreeMap::new();
    for line in out.stdout.lines().filter(|l| l.starts_with("clock ")) {
        // "clock <id> pid <pid> at <t>s"
        let words: Vec<&str> = line.split(' ').collect();
        pids.entry(words[1].to_string())
            .or_insert_with(Vec::new)
            .push(words[3].to_string());
    }
    assert_eq!(pids.len(), 2, "{}", out.stdout);
    let a = &pids["1"];
    let b = &pids["2"];
    assert_eq!((a.len(), b.len()), (3, 3));
    assert!(a.iter().all(|p| p == &a[0]) && b.iter().all(|p| p == &b[0]));
    assert_ne!(a[0], b[0], "the two clocks ran in one process");
    assert!(
        out.stdout.ends_with("both clocks done: 6\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn producer_consumer() {
    let out = run(env!("CARGO_BIN_EXE_producer_consumer"));
    assert_eq!(out.stdout, "aa\nbb\ncc\nconsumer printed 3 messages\n");
}

#[test]
fn panic_in_child() {
    let out = run(env!("CARGO_BIN_EXE_panic_in_child"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("child failed: child `divide-2` (pid "),
        "{}",
        lines[0]
    );
    // The path is as rustc saw it: `examples/..` or `tests/../examples/..`.
    assert!(
        lines[0].contains("panicked: 'attempt to divide by zero' at ")
            && lines[0].contains("examples/panic_in_child.rs:"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "message: attempt to divide by zero");
    assert!(lines[2].starts_with("location: ") && lines[2].contains("examples/panic_in_child.rs:"));
    // The child's own panic message went to its stderr, as Rust users expect.
    assert!(
        out.stderr.contains("attempt to divide by zero"),
        "{}",
        out.stderr
    );
}

#[test]
fn pipeline() {
    let out = run(env!("CARGO_BIN_EXE_pipeline"));
    let expected: String = (1..=6).map(|i| format!("{i} -> {}\n", i * i)).collect();
    assert_eq!(out.stdout, expected + "stages handled 6, 6 and 6 items\n");
}

#[test]
fn fan_out_fan_in() {
    let out = run(env!("CARGO_BIN_EXE_fan_out_fan_in"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "4 workers, 20 tasks");
    // Results in input order: 7, 14, ..., 140.
    let inputs: Vec<u64> = lines[1..21]
        .iter()
        .map(|l| {
            l.strip_prefix("steps(")
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(inputs, (1..=20).map(|i| i * 7).collect::<Vec<u64>>());
    assert_eq!(lines[1], "steps(7) = 16");
    for (id, line) in lines[21..].iter().enumerate() {
        assert_eq!(*line, format!("worker {id} handled 5 tasks"));
    }
}

#[test]
fn request_reply() {
    let out = run(env!("CARGO_BIN_EXE_request_reply"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (id, line) in lines[..4].iter().enumerate() {
        assert_eq!(*line, format!("client {id}: 50 calls answered correctly"));
    }
    assert!(lines[4].starts_with("the crashing call: call to service `calculator` failed"));
    assert!(lines[4].contains("without replying"), "{}", lines[4]);
    assert!(
        lines[5].starts_with("the server: 'asked to crash' at "),
        "{}",
        lines[5]
    );
    assert!(lines[6].ends_with("the server is gone"), "{}", lines[6]);
}

#[test]
fn ring() {
    let out = run(env!("CARGO_BIN_EXE_ring"));
    let mut expected = "5 nodes, 3 rounds\ntoken came back after 15 hops\n".to_string();
    for id in 0..5 {
        expected += &format!("node {id} saw the token 3 times\n");
    }
    assert_eq!(out.stdout, expected);
}

#[test]
fn pub_sub() {
    let out = run(env!("CARGO_BIN_EXE_pub_sub"));
    let mut expected = "published 10 prices to 3 subscribers\n".to_string();
    for id in 0..3 {
        expected += &format!("subscriber {id}: 10 prices, sum 11125\n");
    }
    assert_eq!(out.stdout, expected);
}

#[test]
fn work_queue() {
    let out = run(env!("CARGO_BIN_EXE_work_queue"));
    let sum: u64 = (1..=30_u64).map(|n| n * n).sum();
    assert_eq!(
        out.stdout,
        format!(
            "3 workers, 30 tasks\nall 30 tasks done\nsum of squares: {sum}\n\
             the workers handled 30 tasks\n"
        )
    );
}

#[test]
fn pool_progress() {
    let out = run(env!("CARGO_BIN_EXE_pool_progress"));
    assert_eq!(out.stdout, "200 results, sum of squares 2646700\n");
}

#[test]
fn pool_map() {
    let out = run(env!("CARGO_BIN_EXE_pool_map"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 21, "{}", out.stdout);
    let pids: std::collections::BTreeSet<&str> = lines[..20]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.strip_prefix(&format!("task {i:2} ran in pid "))
                .unwrap_or_else(|| panic!("line {i}: {l}"))
        })
        .collect();
    assert!((2..=5).contains(&pids.len()), "{pids:?}");
    assert_eq!(lines[20], format!("20 tasks, {} workers", pids.len()));
}

#[test]
fn pool_crash() {
    let out = run(env!("CARGO_BIN_EXE_pool_crash"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 13, "{}", out.stdout);
    for (task, line) in lines[..12].iter().enumerate() {
        if task == 7 {
            assert!(
                line.starts_with("task 7: failed: child `crash-demo-"),
                "{line}"
            );
            assert!(line.contains("killed by signal 9 (SIGKILL)"), "{line}");
        } else {
            assert_eq!(*line, format!("task {task}: {}", task * 10));
        }
    }
    assert_eq!(lines[12], "again: [10, 20, 30]");
}

#[test]
fn supervised_restart() {
    let out = run(env!("CARGO_BIN_EXE_supervised_restart"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    let done: Vec<&str> = lines[..12].to_vec();
    let expected: Vec<String> = [(1, 1..5), (2, 6..10), (3, 11..15)]
        .into_iter()
        .flat_map(|(w, jobs)| jobs.map(move |j| format!("worker {w}: job {j}")))
        .collect();
    assert_eq!(done, expected);
    let last = lines[12];
    assert!(
        last.starts_with("supervisor `flaky-workers` gave up: more than 2 restarts within 10s"),
        "{last}"
    );
    assert!(last.contains("panicked: 'job 15 is cursed'"), "{last}");
    assert_eq!(lines.len(), 13);
}

#[test]
fn async_pipeline() {
    let out = run(env!("CARGO_BIN_EXE_async_pipeline"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", out.stdout);
    for (i, line) in lines[..4].iter().enumerate() {
        assert!(line.starts_with(&format!("hash(job-{i}) = ")), "{line}");
    }
    assert_eq!(lines[4], "pool: 0 1 4 9 16 25 36 49");
    assert_eq!(lines[5], "stages handled 4 and 4 items");
    assert_eq!(lines[6], "the runtime's timer ticked while we waited: true");
}
