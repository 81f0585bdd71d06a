//! Loading the eBPF object, attaching and detaching programs (being written).
