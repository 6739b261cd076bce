//! Regression tests for issue 13 ("faults must not break the promises"), one per item, each
//! named after it: a child that attacks what it was handed, descriptors it should not have,
//! timeouts that must hold.

mod support;

use multiproc::SharedMemory;

/// A hostile child: truncates to 0 bytes every shared region (memfd) it holds; returns how
/// many it could truncate.
#[multiproc::process]
fn truncate_shared_regions(region: SharedMemory) -> usize {
    let mut truncated = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target
            .to_string_lossy()
            .starts_with("/memfd:multiproc-shared")
        {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        // SAFETY: ftruncate on a descriptor number this process holds.
        if unsafe { libc::ftruncate(fd, 0) } == 0 {
            truncated += 1;
        }
    }
    drop(region);
    truncated
}

/// Item 4: a child that shrinks a `SharedMemory` it was sent could make its parent die of
/// SIGBUS on the next read. Regions are sealed against shrinking now.
#[multiproc::test]
fn issue13_4_a_child_cannot_shrink_a_shared_region_under_its_parent() {
    let region = SharedMemory::from_byte(7, 1 << 20).unwrap();
    let child = multiproc::spawn(truncate_shared_regions, (region.clone(),)).unwrap();
    let truncated = support::join(child).unwrap();
    assert_eq!(truncated, 0, "the child shrank the region it was sent");
    // Without the seal this read would kill the test process with SIGBUS.
    assert!(region.iter().all(|b| *b == 7));
}
