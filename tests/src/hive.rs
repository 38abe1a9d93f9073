//! A small Windows registry hive writer (placeholder, being written).
