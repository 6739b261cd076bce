//! Holds the example topologies in `examples/*.rs`; run them with `cargo run --example NAME`.
