//! A pipeline of three stages, each its own process, connected by channels:
//! `parse -> square -> format`. The parent feeds the first stage and reads the last.
//! Closing the input ends the pipeline: each stage finishes when its input does and drops its
//! output, so the end-of-stream ripples through without a sentinel.
//!
//! Run: `cargo run --example pipeline`
//!
//! Prints `1 -> 1`, `2 -> 4`, ... `6 -> 36`, then `stages handled 6, 6 and 6 items`.
// ANCHOR: stages
use multiproc::{Process, Receiver, Sender};
use serde::{Deserialize, Serialize};

/// Stage 1: text to numbers.
#[derive(Serialize, Deserialize)]
struct Parse {
    input: Receiver<String>,
    output: Sender<u64>,
}

#[multiproc::process]
impl Parse {
    fn run(self) -> usize {
        let mut n = 0;
        for line in self.input {
            let value: u64 = line.trim().parse().expect("a number");
            self.output.send(value).expect("next stage");
            n += 1;
        }
        n
    }
}

/// Stage 2: square each number, keeping the original beside it.
#[derive(Serialize, Deserialize)]
struct Square {
    input: Receiver<u64>,
    output: Sender<(u64, u64)>,
}

#[multiproc::process]
impl Square {
    fn run(self) -> usize {
        self.input
            .into_iter()
            .map(|x| self.output.send((x, x * x)).expect("next stage"))
            .count()
    }
}

/// Stage 3: format for display.
#[derive(Serialize, Deserialize)]
struct Format {
    input: Receiver<(u64, u64)>,
    output: Sender<String>,
}

#[multiproc::process]
impl Format {
    fn run(self) -> usize {
        self.input
            .into_iter()
            .map(|(x, y)| self.output.send(format!("{x} -> {y}")).expect("sink"))
            .count()
    }
}
// ANCHOR_END: stages

// ANCHOR: main
#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let (source, parse_in) = multiproc::channel()?;
    let (parse_out, square_in) = multiproc::channel()?;
    let (square_out, format_in) = multiproc::channel()?;
    let (format_out, sink) = multiproc::channel()?;

    let parse = Parse {
        input: parse_in,
        output: parse_out,
    }
    .spawn()?;
    let square = Square {
        input: square_in,
        output: square_out,
    }
    .spawn()?;
    let format = Format {
        input: format_in,
        output: format_out,
    }
    .spawn()?;

    // Feed from a thread while this one drains the sink, so that the stages work while the
    // input is still coming. (Sending everything first would not block: an unbounded
    // `channel()` never waits for a slow reader, whose process holds what it has not read.)
    let feeder = std::thread::spawn(move || {
        for line in ["1", "2", "3", "4", "5", "6"] {
            source.send(line.to_string())?;
        }
        Ok::<(), multiproc::Error>(())
        // `source` drops here: end of input, and each stage finishes in turn
    });

    for line in sink {
        println!("{line}");
    }
    feeder.join().expect("feeder thread")?;
    let counts = (parse.join()?, square.join()?, format.join()?);
    println!(
        "stages handled {}, {} and {} items",
        counts.0, counts.1, counts.2
    );
    assert_eq!(counts, (6, 6, 6));
    Ok(())
}
// ANCHOR_END: main
