//! Disk-image builders (placeholder, being written).
