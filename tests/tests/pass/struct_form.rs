//! The struct form, with other items in the block and channels as fields.
use multiproc::{Process, Receiver};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Summer {
    inbox: Receiver<u64>,
}

#[multiproc::process]
impl Summer {
    const NAME: &'static str = "summer";

    fn run(self) -> u64 {
        self.inbox.into_iter().sum()
    }

    #[allow(dead_code)]
    fn helper(&self) {}
}

#[derive(Serialize, Deserialize)]
struct Unit;

#[multiproc::process]
impl Unit {
    fn run(self) {}
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let (tx, rx) = multiproc::channel()?;
    let child = Summer { inbox: rx }.spawn()?;
    for i in 1..=4 {
        tx.send(i)?;
    }
    drop(tx);
    assert_eq!(child.join()?, 10);
    assert_eq!(Summer::NAME, "summer");
    Unit.spawn()?.join()?;
    Ok(())
}
