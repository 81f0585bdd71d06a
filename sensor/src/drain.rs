//! Double-buffered, loss-free draining of the kernel maps (being written).
