// Python's classic deadlock: a thread queue handed to a process. Here it does not compile.
#[multiproc::process]
fn consume(inbox: std::sync::mpsc::Receiver<u32>) -> u32 {
    inbox.iter().sum()
}

fn main() {}
