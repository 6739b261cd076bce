//! Resource limits per child: memory, CPU time, open files; each hit is its own error kind.

mod support;

use std::time::Duration;

use multiproc::{Builder, ErrorKind, Pool};
use support::{join, within};

#[multiproc::process]
fn allocate(mib: usize) -> usize {
    let v = vec![1_u8; mib << 20];
    std::hint::black_box(&v);
    v.len()
}

#[multiproc::test]
fn exceeding_the_memory_limit_is_a_memory_limit_error() {
    let small = Builder::new()
        .memory_limit(512 << 20)
        .stderr(multiproc::Stdio::Null)
        .spawn_fn(allocate, (8,))
        .unwrap();
    assert_eq!(join(small).unwrap(), 8 << 20);
    let big = Builder::new()
        .memory_limit(512 << 20)
        .stderr(multiproc::Stdio::Null)
        .spawn_fn(allocate, (4096,))
        .unwrap();
    let e = join(big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MemoryLimit, "{e}");
    assert!(e.to_string().contains("512 MiB"), "{e}");
}

#[multiproc::process]
fn spin() -> u64 {
    let mut x = 0_u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[multiproc::test]
fn using_up_the_cpu_time_limit_is_a_cpu_limit_error() {
    let child = Builder::new()
        .cpu_time_limit(Duration::from_secs(1))
        .spawn_fn(spin, ())
        .unwrap();
    let e = join(child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CpuLimit, "{e}");
    assert!(e.to_string().contains("1 s of CPU time"), "{e}");
}

#[multiproc::process]
fn open_many(n: usize) -> usize {
    let files: Vec<_> = (0..n)
        .map_while(|_| std::fs::File::open("/dev/null").ok())
        .collect();
    files.len()
}

#[multiproc::test]
fn the_open_files_limit_caps_what_the_child_can_open() {
    let child = Builder::new()
        .open_files_limit(32)
        .spawn_fn(open_many, (100,))
        .unwrap();
    let opened = join(child).unwrap();
    assert!(opened < 32, "opened {opened} files under a limit of 32");
    assert!(opened > 0);
}

#[multiproc::test]
fn a_pool_task_past_the_memory_limit_fails_alone() {
    let results = within(|| {
        let pool = Pool::builder()
            .workers(2)
            .memory_limit(512 << 20)
            .build()
            .unwrap();
        pool.imap(allocate, [1, 4096, 2])
            .unwrap()
            .collect::<Vec<_>>()
    });
    assert_eq!(*results[0].as_ref().unwrap(), 1 << 20);
    assert_eq!(
        results[1].as_ref().unwrap_err().kind(),
        ErrorKind::MemoryLimit
    );
    assert_eq!(*results[2].as_ref().unwrap(), 2 << 20);
}

#[multiproc::process]
fn say_then_die(words: Vec<String>) {
    for w in &words {
        eprintln!("{w}");
    }
    println!("done talking");
    // SAFETY: _exit ends only this process.
    unsafe { libc::_exit(7) };
}

#[multiproc::test]
fn a_crashed_childs_error_carries_the_last_lines_of_its_prefixed_stderr() {
    let words: Vec<String> = (1..=15).map(|i| format!("line {i}")).collect();
    let child = Builder::new()
        .name("talker")
        .stdout(multiproc::Stdio::Prefixed)
        .stderr(multiproc::Stdio::Prefixed)
        .spawn_fn(say_then_die, (words,))
        .unwrap();
    let e = join(child).unwrap_err();
    assert_eq!(e.exit_code(), Some(7));
    let tail = e.stderr_tail().expect("a tail");
    let expected: Vec<String> = (6..=15).map(|i| format!("line {i}")).collect();
    assert_eq!(tail, expected.as_slice());
    assert!(
        e.to_string()
            .contains("the last lines of its stderr:\n    | line 6"),
        "{e}"
    );
}

#[multiproc::process]
fn say_then_panic(words: Vec<String>) {
    for w in &words {
        eprintln!("{w}");
    }
    panic!("out of words");
}

/// Regression (issue 13, item 8): a panicked child's error lacked the stderr tail that an
/// exited one carries.
#[multiproc::test]
fn issue13_8_a_panicked_childs_error_carries_its_stderr_tail() {
    let words: Vec<String> = (1..=3).map(|i| format!("line {i}")).collect();
    let child = Builder::new()
        .name("talker")
        .stderr(multiproc::Stdio::Prefixed)
        // The panic's own lines, not a backtrace's, are the last ten.
        .env("RUST_BACKTRACE", "0")
        .spawn_fn(say_then_panic, (words,))
        .unwrap();
    let e = join(child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    let tail = e.stderr_tail().expect("a tail").join("\n");
    assert!(tail.contains("line 3"), "{tail}");
    assert!(
        tail.contains("out of words"),
        "the panic message as printed: {tail}"
    );
}
