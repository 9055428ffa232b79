//! The sessions service's tests: its domain called directly, and its gRPC contract over a real
//! loopback listener, over embedded stores. One test binary, so the suite links once.

mod common;
mod domain;
mod grpc;
