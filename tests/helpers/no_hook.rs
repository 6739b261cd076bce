//! Helper for `tests/hooks.rs`: a `main` without the multiproc hook tries to spawn. It must
//! fail at once, in the parent, with an error naming the fix; no process starts.

#[multiproc::process]
fn echo(x: u32) -> u32 {
    x
}

fn main() {
    match multiproc::spawn(echo, (1,)) {
        Ok(_) => println!("spawned"),
        Err(e) => {
            println!("kind={:?}", e.kind());
            println!("error={e}");
        }
    }
}
