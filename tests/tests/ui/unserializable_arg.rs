struct Handle(std::fs::File);

#[multiproc::process]
fn write_to(handle: Handle) -> u32 {
    let _ = handle;
    0
}

fn main() {}
