//! Cluster queues on a real `nats-server` (the `cluster` feature): delivery across processes,
//! kills, a server restart, bad input, credentials. Each test starts its own server; without
//! `nats-server` on PATH they say so loudly and pass, unless MULTIPROC_REQUIRE_NATS=1 (CI).
#![cfg(feature = "cluster")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::cluster::Cluster;
use multiproc::cluster::testing::NatsServer;
use multiproc::{ErrorKind, Sender};
use support::{DEADLINE, join};

/// A server for the test (see `NatsServer::for_test`) and a connection to it.
fn connected() -> Option<(NatsServer, Cluster)> {
    let server = NatsServer::for_test()?;
    let cluster = Cluster::connect(&server.url()).unwrap();
    Some((server, cluster))
}

/// A connection that waits up to [`DEADLINE`] for an answer (a spawn waits that long for
/// the nodes the test just started).
fn patient(server: &NatsServer) -> Cluster {
    Cluster::builder()
        .request_timeout(DEADLINE)
        .connect(&server.url())
        .unwrap()
}

/// Takes items until the queue is closed; returns them.
#[multiproc::process]
fn take_all(url: String, name: String) -> Vec<u64> {
    let cluster = Cluster::connect(&url).unwrap();
    let queue = cluster.queue::<u64>(&name).unwrap();
    queue.iter().collect()
}

#[multiproc::test]
fn a_cluster_queue_gives_each_item_to_exactly_one_consumer_process() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let queue = cluster.queue::<u64>("tasks").unwrap();
    let consumers: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(take_all, (server.url(), "tasks".to_string())).unwrap())
        .collect();
    for i in 0..300 {
        queue.put(i).unwrap();
    }
    queue.close().unwrap();
    assert_eq!(queue.put(1).unwrap_err().kind(), ErrorKind::Closed);
    let mut all = Vec::new();
    for c in consumers {
        all.extend(join(c).unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..300).collect::<Vec<_>>(),
        "lost or duplicated items"
    );
    assert_eq!(queue.len().unwrap(), 0);
}

#[multiproc::test]
fn puts_gets_timeouts_and_a_bound_behave_as_locally() {
    let Some((_server, cluster)) = connected() else {
        return;
    };
    let queue = cluster.queue_with_maxsize::<String>("bounded", 3).unwrap();
    assert_eq!(queue.try_get().unwrap_err().kind(), ErrorKind::Empty);
    assert!(
        queue
            .get_timeout(Duration::from_millis(200))
            .unwrap_err()
            .is_timeout()
    );
    for s in ["a", "b", "c"] {
        queue.try_put(s.to_string()).unwrap();
    }
    assert_eq!(queue.len().unwrap(), 3);
    let full = queue.try_put("d".to_string()).unwrap_err();
    assert!(full.is_full(), "{full}");
    assert_eq!(full.into_inner(), "d");
    let late = queue
        .put_timeout("e".to_string(), Duration::from_millis(200))
        .unwrap_err();
    assert!(late.error().is_timeout(), "{}", late.error());
    assert_eq!(queue.get().unwrap(), "a");
    queue.try_put("f".to_string()).unwrap();
    let rest: Vec<String> = (0..3).map(|_| queue.get().unwrap()).collect();
    assert_eq!(rest, ["b", "c", "f"]);
}

/// Takes items and reports each on `got` after it has it, until killed.
#[multiproc::process]
fn take_and_report(url: String, got: Sender<u64>) {
    let cluster = Cluster::connect(&url).unwrap();
    let queue = cluster.queue::<u64>("killed").unwrap();
    loop {
        got.send(queue.get().unwrap()).unwrap();
    }
}

/// A consumer killed at a random point of its gets loses at most the one item it had taken
/// (acknowledged, not yet reported): an item taken from the server but not acknowledged goes
/// to the next consumer.
#[multiproc::test]
fn a_consumer_killed_mid_stream_loses_at_most_the_item_it_held() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let queue = cluster.queue::<u64>("killed").unwrap();
    for i in 0..400 {
        queue.put(i).unwrap();
    }
    let mut next = support::random();
    let (got_tx, got_rx) = multiproc::channel::<u64>().unwrap();
    let mut got = Vec::new();
    const KILLS: usize = 3;
    for _ in 0..KILLS {
        let mut consumer =
            multiproc::spawn(take_and_report, (server.url(), got_tx.clone())).unwrap();
        for _ in 0..1 + next() % 40 {
            got.push(got_rx.recv_timeout(DEADLINE).unwrap());
        }
        consumer.kill().unwrap();
        let _ = join(consumer);
    }
    drop(got_tx);
    got.extend(got_rx.iter());
    // What is left, including what a killed consumer had fetched but not acknowledged
    // (given out again after the acknowledgement wait).
    while let Ok(item) = queue.get_timeout(Duration::from_secs(8)) {
        got.push(item);
        if got.len() >= 400 {
            break;
        }
    }
    let taken: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(taken.len(), got.len(), "an item was delivered twice");
    let lost = 400 - taken.len();
    assert!(lost <= KILLS, "{lost} items lost to {KILLS} consumer kills");
}

/// Takes items, working 200 ms on each, until the queue has been empty for 2 s; how many.
#[multiproc::process]
fn take_slowly(url: String) -> usize {
    let cluster = Cluster::connect(&url).unwrap();
    let queue = cluster.queue::<u64>("slow").unwrap();
    let mut taken = 0;
    while queue.get_timeout(Duration::from_secs(2)).is_ok() {
        std::thread::sleep(Duration::from_millis(200));
        taken += 1;
    }
    taken
}

/// A consumer that works on each item takes one at a time (only a consumer that drains the
/// queue quickly fetches ahead), so slow tasks spread over every consumer.
#[multiproc::test]
fn slow_items_spread_over_every_consumer() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let queue = cluster.queue::<u64>("slow").unwrap();
    for i in 0..12 {
        queue.put(i).unwrap();
    }
    let consumers: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(take_slowly, (server.url(),)).unwrap())
        .collect();
    let taken: Vec<usize> = consumers.into_iter().map(|c| join(c).unwrap()).collect();
    assert_eq!(taken.iter().sum::<usize>(), 12, "{taken:?}");
    assert!(
        taken.iter().all(|&n| n >= 3),
        "one consumer took the rest: {taken:?}"
    );
}

#[multiproc::test]
fn items_survive_a_restart_of_the_server() {
    let Some((mut server, cluster)) = connected() else {
        return;
    };
    let queue = cluster.queue::<u64>("durable").unwrap();
    for i in 0..100 {
        queue.put(i).unwrap();
    }
    server.restart().unwrap();
    // The client reconnects on its own; puts and gets wait for it.
    for i in 100..110 {
        queue.put(i).unwrap();
    }
    let items: Vec<u64> = (0..110)
        .map(|_| queue.get_timeout(DEADLINE).unwrap())
        .collect();
    assert_eq!(items, (0..110).collect::<Vec<_>>());
}

#[multiproc::test]
fn a_malformed_item_is_an_error_and_the_queue_stays_usable() {
    let Some((_server, cluster)) = connected() else {
        return;
    };
    // Another program (or a hostile client) puts bytes that are no u64 on the same queue.
    cluster
        .queue::<[u8; 12]>("mixed")
        .unwrap()
        .put([0xff; 12])
        .unwrap();
    let queue = cluster.queue::<u64>("mixed").unwrap();
    queue.put(5).unwrap();
    let e = queue.get().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deserialize, "{e}");
    assert_eq!(queue.get().unwrap(), 5);
}

#[multiproc::test]
fn items_that_cannot_cross_machines_are_refused_with_the_reason() {
    let Some((_server, cluster)) = connected() else {
        return;
    };
    let senders = cluster.queue::<Sender<u8>>("ends").unwrap();
    let (tx, _rx) = multiproc::channel::<u8>().unwrap();
    let e = senders.put(tx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialize);
    assert!(e.to_string().contains("cannot cross machines"), "{e}");

    let e = cluster.queue::<u8>("no spaces").unwrap_err();
    assert!(e.to_string().contains("letters, digits"), "{e}");
}

#[multiproc::test]
fn credentials_are_checked_and_a_refusal_says_so() {
    let Some(server) = NatsServer::for_test_with(&["--user", "worker", "--pass", "s3cret"]) else {
        return;
    };
    let url = server.url();
    let e = Cluster::connect(&url).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthRefused, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    let e = Cluster::builder()
        .user_and_password("worker", "wrong")
        .connect(&url)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthRefused, "{e}");
    let cluster = Cluster::builder()
        .user_and_password("worker", "s3cret")
        .name("test-worker")
        .connect(&url)
        .unwrap();
    let queue = cluster.queue::<u8>("authed").unwrap();
    queue.put(1).unwrap();
    assert_eq!(queue.get().unwrap(), 1);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// `openssl` command in `dir` (`.ci/run` installs it; without it the TLS test fails under
/// MULTIPROC_REQUIRE_NATS=1 and says so otherwise).
fn certificates(dir: &std::path::Path) -> Option<()> {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| assert!(s.success(), "openssl {args:?} failed"))
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let made = openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=multiproc test CA",
            ][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    if made.is_err() {
        assert!(
            std::env::var(multiproc::cluster::testing::REQUIRE_VAR)
                .ok()
                .is_none_or(|v| v != "1"),
            "openssl is not installed, and the TLS test is required"
        );
        eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
        return None;
    }
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        openssl(
            &[
                &["req", "-subj", &format!("/CN={name}")][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            ]
            .concat(),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ])
        .unwrap();
    }
    Some(())
}

/// TLS: a client that trusts the server's CA connects and works; one that does not is
/// refused with the server and the cause named; a server that asks for client certificates
/// takes only clients that present one it trusts.
#[multiproc::test]
fn tls_connections_check_the_servers_certificate_and_the_clients() {
    let dir = std::env::temp_dir().join(format!("multiproc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir.clone());
    if certificates(&dir).is_none() {
        return;
    }
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let Some(server) = NatsServer::for_test_with(&["--tls", "--tlscert", &cert, "--tlskey", &key])
    else {
        return;
    };
    let url = server.url();
    let e = Cluster::builder()
        .require_tls(true)
        .connect_timeout(Duration::from_secs(2))
        .connect(&url)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    let cluster = Cluster::builder()
        .require_tls(true)
        .root_certificates(&ca)
        .connect(&url)
        .unwrap();
    let queue = cluster.queue::<String>("secret").unwrap();
    queue.put("over TLS".to_string()).unwrap();
    assert_eq!(queue.get().unwrap(), "over TLS");
    drop((queue, cluster, server));

    let Some(server) = NatsServer::for_test_with(&[
        "--tlsverify",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca,
    ]) else {
        return;
    };
    let url = server.url();
    let e = Cluster::builder()
        .require_tls(true)
        .root_certificates(&ca)
        .connect_timeout(Duration::from_secs(2))
        .connect(&url)
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::AuthRefused),
        "{e}"
    );
    let cluster = Cluster::builder()
        .require_tls(true)
        .root_certificates(&ca)
        .client_certificate(path("client.pem"), path("client.key"))
        .connect(&url)
        .unwrap();
    let queue = cluster.queue::<u8>("mutual").unwrap();
    queue.put(7).unwrap();
    assert_eq!(queue.get().unwrap(), 7);
}

#[multiproc::test]
fn an_unreachable_server_is_an_error_naming_it() {
    let Some(mut server) = NatsServer::for_test() else {
        return;
    };
    let url = server.url();
    server.kill();
    let e = Cluster::builder()
        .connect_timeout(Duration::from_millis(500))
        .connect(&url)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
}

/// The tutorial's example, as a user runs it: its own server, two worker processes.
#[test]
fn the_distributed_master_worker_example_runs() {
    if NatsServer::for_test().is_none() {
        return;
    }
    let out = support::run_bin(env!("CARGO_BIN_EXE_distributed_master_worker"), |_| {});
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"10 tasks, 2 workers"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[lines.len().saturating_sub(2)..],
        [
            "pool: 10000 squares, squares[3] = 9",
            "spawned: Tally = 5050"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(lines.get(11), Some(&"10 results"), "{}", out.stdout);
    let mut results = lines.drain(1..11).collect::<Vec<_>>();
    results.sort_unstable();
    let mut expected: Vec<String> = (0..10u64)
        .map(|n| format!("{n} * {n} = {}", n * n))
        .collect();
    expected.sort_unstable();
    assert_eq!(results, expected);
}

/// A network namespace for one process, joined to this one by a veth pair: the process
/// shares no network (not even loopback) with the test, as on another host.
struct Netns {
    name: String,
    /// This side's end of the veth pair.
    outer: String,
    /// This side's address, where the namespace reaches the server.
    host_ip: String,
}

impl Netns {
    /// Made where the machine allows (root and iproute2); otherwise says why.
    fn new() -> Option<Netns> {
        let id = std::process::id();
        let (name, outer, inner) = (format!("mp{id}"), format!("mpv{id}a"), format!("mpv{id}b"));
        let subnet = format!("10.213.{}", id % 64 * 4);
        let host_ip = format!("{subnet}.1");
        let steps: [&[&str]; 8] = [
            &["netns", "add", &name],
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
            &["link", "set", &inner, "netns", &name],
            &["addr", "add", &format!("{host_ip}/30"), "dev", &outer],
            &["link", "set", &outer, "up"],
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{subnet}.2/30"),
                "dev",
                &inner,
            ],
            &["-n", &name, "link", "set", &inner, "up"],
            &["-n", &name, "link", "set", "lo", "up"],
        ];
        let netns = Netns {
            name: name.clone(),
            outer: outer.clone(),
            host_ip: host_ip.clone(),
        };
        for step in steps {
            let done = std::process::Command::new("ip")
                .args(step)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !done {
                eprintln!(
                    "SKIPPED: this machine does not allow a network namespace (`ip {}` failed: \
                     it needs root and iproute2)",
                    step.join(" ")
                );
                return None;
            }
        }
        Some(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair (soon); ours too, at once.
        for args in [
            ["link", "delete", &self.outer],
            ["netns", "delete", &self.name],
        ] {
            let _ = std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The tutorial across two "hosts": the worker runs in a network namespace of its own and
/// reaches the server only through a veth link, so nothing leans on what the two share on
/// this machine; the master, with no local workers, gets its queue results and its whole
/// pool map from that worker alone.
#[multiproc::test]
fn a_worker_in_its_own_network_namespace_serves_the_master() {
    let Some(server) = NatsServer::for_test_with(&["-a", "0.0.0.0"]) else {
        return;
    };
    let Some(netns) = Netns::new() else {
        return;
    };
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let remote_url = format!("nats://{}:{port}", netns.host_ip);
    let example = env!("CARGO_BIN_EXE_distributed_master_worker");
    let mut worker = KillOnDrop(
        std::process::Command::new("ip")
            .args(["netns", "exec", &netns.name, example, "worker", &remote_url])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = support::run_bin(example, |c| {
        c.args(["master", &server.url(), "--no-local-workers"]);
    });
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("10 results"), "{}", out.stdout);
    assert!(
        out.stdout.contains("pool: 10000 squares, squares[3] = 9")
            && out.stdout.contains("spawned: Tally = 5050"),
        "{}",
        out.stdout
    );
    // SIGTERM: the worker's node stops its local workers, then ends as the signal would.
    // SAFETY: kill takes plain integers; the worker is our unreaped child.
    unsafe { libc::kill(worker.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = support::wait_within(&mut worker.0, DEADLINE);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "{status}"
    );
}

#[multiproc::process]
fn square(n: u64) -> u64 {
    n * n
}

#[multiproc::process]
fn boom(n: u64) -> u64 {
    panic!("task {n} fails")
}

/// A node host: serves this build's pool tasks with two workers until killed.
#[multiproc::process]
fn serve_node(url: String, name: String) {
    let cluster = Cluster::connect(&url).unwrap();
    cluster.node().workers(2).name(&name).serve().unwrap();
}

fn nodes(server: &NatsServer, n: usize) -> Vec<multiproc::JoinHandle<()>> {
    (0..n)
        .map(|i| multiproc::spawn(serve_node, (server.url(), format!("node-{i}"))).unwrap())
        .collect()
}

fn stop(nodes: Vec<multiproc::JoinHandle<()>>) {
    for mut node in nodes {
        let _ = node.kill();
        let _ = join(node);
    }
}

#[multiproc::test]
fn a_cluster_pool_maps_over_two_node_processes() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let hosts = nodes(&server, 2);
    let pool = cluster.pool().unwrap();
    let squares: Vec<u64> = pool.map(square, 0..2_000u64).unwrap();
    assert_eq!(squares, (0..2_000u64).map(|n| n * n).collect::<Vec<_>>());
    assert_eq!(pool.apply(square, (12,)).unwrap(), 144);
    assert_eq!(pool.starmap(square, [(2,), (3,)]).unwrap(), [4, 9]);
    let mut seen: Vec<usize> = pool
        .imap_unordered(square, 0..50u64)
        .unwrap()
        .map(|(i, r)| {
            assert_eq!(r.unwrap(), (i * i) as u64);
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    let e = pool.apply(boom, (7,)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert_eq!(e.remote_panic().unwrap().message(), "task 7 fails");
    stop(hosts);
}

#[multiproc::process]
fn slow_square(n: u64) -> u64 {
    // About a millisecond each, so that a node is killed with work in hand.
    let until = std::time::Instant::now() + Duration::from_millis(1);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    n * n
}

/// Fault injection: a node is SIGKILLed at a random point of a map; the chunks it held go to
/// the other node, and every result arrives exactly once.
#[multiproc::test]
fn a_node_killed_mid_map_loses_nothing_and_every_result_comes_once() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let hosts = nodes(&server, 2);
    let victim = hosts[0].pid();
    let pool = cluster.pool().unwrap().with_chunksize(10);
    let strike = 50 + support::random()() as usize % 400;
    let got = support::within(move || {
        let mut got = Vec::new();
        for (k, (i, r)) in pool
            .imap_unordered(slow_square, 0..1_000u64)
            .unwrap()
            .enumerate()
        {
            got.push((i, r.unwrap()));
            if k == strike {
                // SAFETY: kill takes plain integers; `victim` is our unreaped child.
                unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
            }
        }
        got
    });
    let indices: BTreeSet<usize> = got.iter().map(|&(i, _)| i).collect();
    assert_eq!(got.len(), 1_000, "every result once");
    assert_eq!(indices.len(), 1_000, "no index twice");
    assert!(got.iter().all(|&(i, v)| v == (i * i) as u64));
    stop(hosts);
}

/// Kills the node it runs on (the parent of its worker), unless that is the test process.
#[multiproc::process]
fn kill_my_node(test_pid: u32) -> u32 {
    // SAFETY: getppid and kill take and return plain integers.
    let node = unsafe { libc::getppid() } as u32;
    assert_ne!(
        node, test_pid,
        "the worker's parent is the test, not a node"
    );
    // SAFETY: as above.
    unsafe { libc::kill(node as libc::pid_t, libc::SIGKILL) };
    node
}

/// A task that kills every node that takes it fails after three deliveries, with an error
/// that says so, instead of killing nodes forever or hanging its caller.
#[multiproc::test]
fn a_task_that_kills_every_node_fails_after_three_deliveries() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    // Three nodes to be killed, and a fourth whose next request for work makes the server
    // notice that the task has used up its deliveries.
    let hosts = nodes(&server, 4);
    let pids: Vec<u32> = hosts.iter().map(|h| h.pid()).collect();
    let cluster = Cluster::connect(&server.url()).unwrap();
    let pool = cluster.pool().unwrap();
    let me = std::process::id();
    let e = support::within(move || pool.apply(kill_my_node, (me,)).unwrap_err());
    assert!(
        e.to_string().contains("was given to 3 cluster nodes"),
        "{e}"
    );
    let alive = pids
        .iter()
        .filter(|&&pid| support::exists(pid) && !support::is_zombie(pid));
    assert_eq!(
        alive.count(),
        1,
        "each delivery killed one node, and only three were made"
    );
    stop(hosts);
}

/// Kills a child process on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node of another build (the example binary, whose entry points differ) is not used, and
/// the caller's error names both builds.
#[multiproc::test]
fn a_node_of_another_build_is_refused_with_both_builds_named() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    let _other = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_distributed_master_worker"))
            .args(["node", &server.url()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cluster = Cluster::connect(&server.url()).unwrap();
    // The node answers once it is up.
    let deadline = std::time::Instant::now() + DEADLINE;
    let e = loop {
        match cluster.pool() {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => continue,
            Ok(_) => panic!("the other build's node never answered"),
        }
    };
    assert_eq!(e.kind(), ErrorKind::BuildMismatch, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("serves build") && text.contains("this program is build"),
        "{text}"
    );
}

/// A malformed message on the task subject (any client with publish rights can send one) is
/// reported by the node and dropped; the node stays up and serving.
#[multiproc::test]
fn a_malformed_task_message_is_rejected_and_the_node_keeps_serving() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let hosts = nodes(&server, 1);
    let pool = cluster.pool().unwrap();
    multiproc::cluster::testing::publish_raw(
        &cluster,
        &multiproc::cluster::testing::task_subject(),
        b"\xff\xff\xff garbage",
    )
    .unwrap();
    let squares = support::within(move || pool.map(square, 0..20u64).unwrap());
    assert_eq!(squares, (0..20u64).map(|n| n * n).collect::<Vec<_>>());
    assert!(support::exists(hosts[0].pid()));
    stop(hosts);
}

/// The server restarts in the middle of a map: tasks and results are in its file storage,
/// nodes and caller reconnect on their own, and every result arrives exactly once.
#[multiproc::test]
fn a_restart_of_the_server_mid_map_loses_nothing() {
    let Some((mut server, cluster)) = connected() else {
        return;
    };
    let hosts = nodes(&server, 2);
    let pool = cluster.pool().unwrap().with_chunksize(10);
    let strike = 50 + support::random()() as usize % 300;
    let (got, server) = support::within(move || {
        let mut got = Vec::new();
        for (k, (i, r)) in pool
            .imap_unordered(slow_square, 0..1_000u64)
            .unwrap()
            .enumerate()
        {
            got.push((i, r.unwrap()));
            if k == strike {
                server.restart().unwrap();
            }
        }
        (got, server)
    });
    let indices: BTreeSet<usize> = got.iter().map(|&(i, _)| i).collect();
    assert_eq!(got.len(), 1_000, "every result once");
    assert_eq!(indices.len(), 1_000, "no index twice");
    assert!(got.iter().all(|&(i, v)| v == (i * i) as u64));
    stop(hosts);
    drop(server);
}

/// No node is up when the call is made: its tasks wait in the server, and the first node to
/// come runs them.
#[multiproc::test]
fn tasks_wait_in_the_server_until_a_node_comes() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let pool = cluster.pool().unwrap();
    let mut pending = pool.apply_async(square, (9,)).unwrap();
    assert!(!pending.ready(), "no node, no result");
    let hosts = nodes(&server, 1);
    assert_eq!(pending.get_timeout(DEADLINE).unwrap(), 81);
    stop(hosts);
}

/// A service host: squares numbers until shut down, panics on 13, sleeps a second on 99;
/// returns how many calls it answered.
#[multiproc::process]
fn serve_squares(url: String) -> usize {
    let cluster = Cluster::connect(&url).unwrap();
    let service = cluster.service::<u64, u64>("squares").unwrap();
    service
        .serve(|n| {
            assert_ne!(n, 13, "unlucky");
            if n == 99 {
                std::thread::sleep(Duration::from_secs(1));
            }
            n * n
        })
        .unwrap()
}

#[multiproc::test]
fn a_cluster_service_shares_calls_between_its_servers_and_reports_their_errors() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let service = cluster.service::<u64, u64>("squares").unwrap();
    let e = service.call(2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("no host serves"), "{e}");

    let hosts: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(serve_squares, (server.url(),)).unwrap())
        .collect();
    // The servers are up once a call gets through.
    let deadline = std::time::Instant::now() + DEADLINE;
    while service.call(1).is_err() {
        assert!(std::time::Instant::now() < deadline, "no server came up");
    }
    for n in (0..100).filter(|n| ![13, 99].contains(n)) {
        assert_eq!(service.call(n).unwrap(), n * n);
    }
    let e = service.call(13).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert!(e.to_string().contains("unlucky"), "{e}");
    let e = service
        .call_timeout(99, Duration::from_millis(100))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // A malformed request (any client can publish one) is answered with an error; the
    // servers go on.
    multiproc::cluster::testing::publish_raw(&cluster, "multiproc.service.squares", b"\xff")
        .unwrap();
    let wrong = cluster.service::<[u8; 12], u64>("squares").unwrap();
    let e = wrong.call([0xff; 12]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deserialize, "{e}");
    assert_eq!(service.call(7).unwrap(), 49);
    let answered: Vec<usize> = hosts
        .into_iter()
        .map(|h| h.shutdown(DEADLINE).unwrap())
        .collect();
    assert!(
        answered.iter().all(|&n| n > 0),
        "both servers take calls: {answered:?}"
    );
}

/// Beyond the server's max_payload (1 MiB here): an 8 MiB queue item, and a pool task whose
/// argument and result are 8 MiB, go through the object store and come back whole.
#[multiproc::test]
fn items_and_tasks_of_8_mib_cross_through_the_object_store() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let big: String = (0..8 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let queue = cluster.queue::<String>("big").unwrap();
    queue.put(big.clone()).unwrap();
    queue.put("small".to_string()).unwrap();
    assert_eq!(queue.get().unwrap(), big);
    assert_eq!(queue.get().unwrap(), "small");

    let hosts = nodes(&server, 1);
    let pool = cluster.pool().unwrap();
    let echoed = pool.apply(echo_reversed, (big.clone(),)).unwrap();
    assert_eq!(echoed, big.chars().rev().collect::<String>());
    stop(hosts);
}

#[multiproc::process]
fn echo_reversed(s: String) -> String {
    s.chars().rev().collect()
}

/// A `#[process]` struct for `cluster.spawn`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sum {
    to: u64,
}

#[multiproc::process]
impl Sum {
    fn run(self) -> (u64, u32) {
        ((1..=self.to).sum::<u64>(), std::process::id())
    }
}

#[multiproc::process]
fn fail_as(how: String) -> u8 {
    match how.as_str() {
        "panic" => panic!("remote trouble"),
        "abort" => std::process::abort(),
        _ => std::process::exit(3),
    }
}

#[multiproc::process]
fn forever() {
    loop {
        std::thread::park();
    }
}

/// `cluster.spawn` starts a process on one of the nodes: its value, its panic, its signal
/// and its exit code come back as a local child's do, and `kill` kills it.
#[multiproc::test]
fn a_process_spawned_on_the_cluster_ends_as_a_local_child_does() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    let hosts = nodes(&server, 2);
    let cluster = patient(&server);
    support::within(move || {
        let handle = cluster.spawn(Sum { to: 10 }).unwrap();
        assert!(["node-0", "node-1"].contains(&handle.node()), "{handle:?}");
        assert!(handle.name().starts_with("Sum-"), "{handle:?}");
        let pid = handle.pid();
        assert_eq!(handle.join().unwrap(), (55, pid));

        let e = cluster
            .spawn_fn(fail_as, ("panic".to_string(),))
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
        assert!(e.to_string().contains("remote trouble"), "{e}");
        let e = cluster
            .spawn_fn(fail_as, ("abort".to_string(),))
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Signaled, "{e}");
        assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
        let e = cluster
            .spawn_fn(fail_as, ("exit".to_string(),))
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Exited, "{e}");
        assert_eq!(e.exit_code(), Some(3), "{e}");

        let mut running = cluster.spawn_fn(forever, ()).unwrap();
        assert!(
            running
                .join_timeout(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        running.kill().unwrap();
        let e = running.join_timeout(DEADLINE).unwrap_err();
        assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
        assert_eq!(
            running.join_timeout(DEADLINE).unwrap_err().kind(),
            ErrorKind::AlreadyJoined
        );
    });
    stop(hosts);
}

/// With no node, a spawn says so once its request timeout is over (it waits that long for one
/// to come); with only a node of another build, it names both builds.
#[multiproc::test]
fn a_spawn_without_a_node_of_this_build_is_refused_with_the_reason() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    let cluster = Cluster::builder()
        .request_timeout(Duration::from_millis(500))
        .connect(&server.url())
        .unwrap();
    let e = cluster.spawn(Sum { to: 1 }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("cluster.node().serve()"), "{e}");
    let _other = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_distributed_master_worker"))
            .args(["node", &server.url()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Refused as before until the other build's node is up.
    let e = support::within(move || {
        loop {
            let e = cluster.spawn(Sum { to: 1 }).unwrap_err();
            if e.kind() != ErrorKind::Disconnected {
                break e;
            }
        }
    });
    assert_eq!(e.kind(), ErrorKind::BuildMismatch, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("serves build") && text.contains("this program is build"),
        "{text}"
    );
}

/// Fault injection: the node under a running process is SIGKILLed at a random moment; the
/// caller's join fails within the documented 5 s instead of waiting forever, and the
/// process is gone with its node.
#[multiproc::test]
fn a_node_killed_under_a_spawned_process_fails_its_handle() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    let mut hosts = nodes(&server, 1);
    let cluster = patient(&server);
    let handle = cluster.spawn_fn(forever, ()).unwrap();
    let remote = support::PidFd::open(handle.pid()).unwrap();
    let mut node = hosts.remove(0);
    let wait = Duration::from_millis(support::random()() % 1_500);
    let joined = support::within(move || {
        let mut handle = handle;
        assert!(handle.join_timeout(wait).unwrap().is_none());
        node.kill().unwrap();
        let _ = join(node);
        handle.join_timeout(DEADLINE)
    });
    let e = joined.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("node-0"), "{e}");
    assert!(remote.wait_exit(DEADLINE), "the process outlived its node");
}

/// Spawns `forever` on the cluster, reports its pid, and waits to be killed.
#[multiproc::process]
fn spawn_and_wait(url: String, pid: Sender<u32>) {
    let cluster = Cluster::builder()
        .request_timeout(DEADLINE)
        .connect(&url)
        .unwrap();
    let handle = cluster.spawn_fn(forever, ()).unwrap();
    pid.send(handle.pid()).unwrap();
    loop {
        std::thread::park();
    }
}

/// Children do not outlive their parent across machines either: a caller SIGKILLed while its
/// process runs on a node has that process killed by the node (within 10 s of its last
/// answer), and the node serves on.
#[multiproc::test]
fn a_caller_killed_has_its_remote_processes_killed_and_the_node_serves_on() {
    let Some(server) = NatsServer::for_test() else {
        return;
    };
    let hosts = nodes(&server, 1);
    let cluster = patient(&server);
    let (tx, rx) = multiproc::channel::<u32>().unwrap();
    let mut caller = multiproc::spawn(spawn_and_wait, (server.url(), tx)).unwrap();
    let remote = support::PidFd::open(rx.recv_timeout(DEADLINE).unwrap()).unwrap();
    caller.kill().unwrap();
    let _ = join(caller);
    assert!(
        remote.wait_exit(DEADLINE),
        "the process outlived its caller"
    );
    let handle = cluster.spawn(Sum { to: 3 }).unwrap();
    assert_eq!(support::within(move || handle.join().unwrap()).0, 6);
    stop(hosts);
}

/// A caller SIGKILLed in the middle of a map leaves the nodes serving: they drop its tasks
/// once it has not answered for 10 s (not the 40 s of work it left), and the next caller's
/// map is whole.
#[multiproc::test]
fn a_caller_killed_mid_map_leaves_the_nodes_serving() {
    let Some((server, cluster)) = connected() else {
        return;
    };
    let hosts = nodes(&server, 2);
    let (tx, rx) = multiproc::channel::<u64>().unwrap();
    let mut caller = multiproc::spawn(map_and_report, (server.url(), tx)).unwrap();
    for _ in 0..1 + support::random()() % 20 {
        rx.recv_timeout(DEADLINE).unwrap();
    }
    caller.kill().unwrap();
    let _ = join(caller);
    let pool = cluster.pool().unwrap();
    let squares = support::within(move || pool.map(square, 0..2_000u64).unwrap());
    assert_eq!(squares, (0..2_000u64).map(|n| n * n).collect::<Vec<_>>());
    stop(hosts);
}

/// Maps over the cluster, 40 s of work for its 4 workers, and reports each result, until
/// killed.
#[multiproc::process]
fn map_and_report(url: String, got: Sender<u64>) {
    let cluster = Cluster::connect(&url).unwrap();
    let pool = cluster.pool().unwrap().with_chunksize(1);
    for (_, r) in pool
        .imap_unordered(nap, (0..1_600u64).map(|_| 100))
        .unwrap()
    {
        got.send(r.unwrap()).unwrap();
    }
}

#[multiproc::process]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}
