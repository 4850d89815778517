//! Shared harness for integration tests.
