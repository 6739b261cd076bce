//! Helper for `tests/hooks.rs`: children that cannot reach their entry point, or run another
//! build. `hook_cases MODE` prints `kind=<ErrorKind>` and `error=<Display>` for the spawn.
//!
//! - `skip`: the child's `main` returns before the hook;
//! - `hang`: the child's `main` blocks before the hook, with a 300 ms start timeout;
//! - `rebuilt`: waits for a line on stdin (the test replaces the executable meanwhile), then
//!   spawns: the child is another build.
use std::time::Duration;

#[multiproc::process]
fn echo(x: u32) -> u32 {
    x
}

fn main() {
    // Code before the hook runs in every child too: that is what these modes exercise.
    if std::env::var_os("HOOK_CASES_SKIP").is_some() {
        println!("skipped the hook");
        return;
    }
    if std::env::var_os("HOOK_CASES_HANG").is_some() {
        std::thread::sleep(Duration::from_secs(600));
    }
    multiproc::init();

    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut builder = multiproc::Builder::new();
    match mode.as_str() {
        "skip" => {
            builder = builder.env("HOOK_CASES_SKIP", "1");
        }
        "hang" => {
            builder = builder
                .env("HOOK_CASES_HANG", "1")
                .start_timeout(Duration::from_millis(300));
        }
        "rebuilt" => {
            println!("waiting");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("stdin");
        }
        "ok" => {}
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
    match builder.spawn_fn(echo, (7,)).and_then(|h| h.join()) {
        Ok(v) => println!("ok={v}"),
        Err(e) => {
            println!("kind={:?}", e.kind());
            println!("error={e}");
        }
    }
}
