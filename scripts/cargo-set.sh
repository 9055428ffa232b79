# shellcheck shell=bash
# Sourced, not run: the one set of cargo options of every build in the test run and in the
# scripts it calls (test-aws, test-k8s, test-k8s-pods, images, frontend, the benchmarks).
#
# Cargo resolves features once per invocation, from the packages on its command line, the
# features asked for and whether dev-dependencies are in. Dev-dependencies change normal ones
# here: tower-test's tokio-test turns on tokio's `test-util`, the tests' reqwest wants `blocking`
# and `cookies`. An invocation that differs in any of the three compiles tokio and everything
# above it again (the AWS SDKs, tonic, kube, the workspace) and keeps a second copy of it all on
# the disk. So every build is `cargo test` or
# `cargo bench` (dev-dependencies in) on the whole workspace with every feature, and a script
# picks its targets by name. The release binaries a script needs (the images' services, the
# web app's and the Pod suite's `lfusys`) are those of that build: the very ones the system
# tests ran.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${LFUSYS_CACHE:-$HOME/.cache/lfusys}/target}"
CARGO_SET=(--workspace --all-features --locked)

# Builds every test target of the workspace, gated suites included, and with them (cargo builds
# a package's binaries for its integration tests) every binary, in $CARGO_TARGET_DIR/release.
build_release() {
  cargo test "${CARGO_SET[@]}" --release --no-run "$@"
}

# The test targets a plain `cargo test` runs: those without `required-features` (the gated
# ones need servers a script starts), as `--test NAME` arguments, one word a line.
ungated_tests() {
  cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if target["kind"] == ["test"] and not target.get("required-features"):
            print("--test", target["name"], sep="\n")
'
}
