//! Generated code of `proto/sessions.proto`.
#![allow(clippy::pedantic, clippy::all, missing_docs)]

tonic::include_proto!("lfusys.sessions.v1");
