//! A program that starts a thread before `multiproc::init()`, then asks for a zygote: the
//! zygote (which re-runs this `main`, thread included) must refuse to fork. Prints the error,
//! then shows that plain spawning still works.

#[multiproc::process]
fn answer() -> u32 {
    42
}

fn main() {
    // A thread started before the hook runs in every child too, the zygote included.
    std::thread::spawn(|| {
        loop {
            std::thread::park();
        }
    });
    multiproc::init();
    match multiproc::Zygote::start() {
        Ok(_) => println!("zygote started"),
        Err(e) => println!("refused: {e}"),
    }
    let got = multiproc::spawn(answer, ()).and_then(|h| h.join());
    println!("plain spawn: {got:?}");
}
