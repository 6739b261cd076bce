struct Job {
    file: std::fs::File,
}

#[multiproc::process]
impl Job {
    fn run(self) -> u32 {
        let _ = self.file;
        0
    }
}

fn main() {}
