//! The `lfusys` command's tests: real `lfusys up` servers and client commands as child
//! processes. `system` runs on the embedded backends (or on AWS-compatible servers with
//! `LFUSYS_TEST_BACKEND=aws`); `aws` (feature `aws-tests`) needs the servers of
//! `scripts/aws-servers.sh`. One test binary, so the suite links once.

#[cfg(feature = "aws-tests")]
mod aws;
mod chaos;
mod crash_points;
mod full_disk;
mod load;
mod support;
mod system;
