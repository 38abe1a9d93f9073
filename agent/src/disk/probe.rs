//! Filesystem and container identification by superblock magic (placeholder, being written).
