//! Prints the `LfusysCluster` CRD as YAML, or with `--check FILE` fails when FILE differs from it
//! (CI uses that to catch a chart whose CRD is stale).

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("crdgen: cannot serialise the CRD: {err}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        [flag, path] if flag == "--check" => match std::fs::read_to_string(path) {
            Ok(committed) if committed == yaml => ExitCode::SUCCESS,
            Ok(_) => {
                eprintln!(
                    "crdgen: {path} is stale; regenerate it with `cargo run -p crds --bin crdgen > {path}`"
                );
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("crdgen: cannot read {path}: {err}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: crdgen [--check FILE]");
            ExitCode::from(2)
        }
    }
}
