//! A small safe wrapper over the `bpf(2)` calls aya 0.14 lacks (being written).
