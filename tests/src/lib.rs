//! Integration tests for multiproc live in `tests/`; the binaries are the examples and helpers.
