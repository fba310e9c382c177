//! Zero-copy send of a file range to a socket (io_uring splice). Being written.
