#!/usr/bin/env python3
"""Checks that an image built by scripts/images.sh is the image its Dockerfile describes.

No Docker engine runs here, so the Dockerfiles in docker/ are never built by our CI; what can be
compared without one is compared: the final stage's USER, WORKDIR, ENV, EXPOSE, ENTRYPOINT/CMD
and LABELs against the OCI image config, and every COPY destination (with its --chown owner)
against the image's layers. Beyond the Dockerfile it checks what distroless promises: no shell,
a CA bundle, the non-root user in /etc/passwd, and the entry binary present and executable.

Usage: scripts/image-check.py DOCKERFILE OCI-ARCHIVE   (exit 1 with one line per difference)
"""
import gzip
import io
import json
import re
import shlex
import sys
import tarfile

# What the Dockerfiles' base image, gcr.io/distroless/cc-debian12:nonroot, sets in its config
# (and so what an image built FROM it has unless the Dockerfile overrides it).
BASE_CONFIG = {
    "User": "65532",
    "WorkingDir": "/home/nonroot",
    "Env": {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    },
}
SHELLS = ["bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/bash", "usr/bin/dash"]


def instructions(dockerfile):
    """(INSTRUCTION, arguments) of the final stage, line continuations joined, ARGs substituted."""
    text = open(dockerfile, encoding="utf-8").read()
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    args, stage = {}, []
    for line in lines:
        name, _, rest = line.partition(" ")
        name = name.upper()
        if name == "FROM":
            stage = []
        elif name == "ARG":
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip().strip('"')
            continue
        stage.append((name, rest.strip()))

    def substitute(value):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)

    return [(name, substitute(rest)) for name, rest in stage]


def pairs(rest):
    """KEY=VALUE pairs of ENV and LABEL (values may be quoted)."""
    return dict(word.split("=", 1) for word in shlex.split(rest))


def command(rest):
    return json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def expected(dockerfile):
    want = {"User": BASE_CONFIG["User"], "WorkingDir": BASE_CONFIG["WorkingDir"],
            "Env": dict(BASE_CONFIG["Env"]), "Labels": {}, "ExposedPorts": set(),
            "Entrypoint": None, "Cmd": None, "copies": []}
    for name, rest in instructions(dockerfile):
        if name == "USER":
            want["User"] = rest
        elif name == "WORKDIR":
            want["WorkingDir"] = rest
        elif name == "ENV":
            want["Env"].update(pairs(rest))
        elif name == "LABEL":
            want["Labels"].update(pairs(rest))
        elif name == "EXPOSE":
            want["ExposedPorts"].update(p if "/" in p else p + "/tcp" for p in rest.split())
        elif name == "ENTRYPOINT":
            want["Entrypoint"] = command(rest)
        elif name == "CMD":
            want["Cmd"] = command(rest)
        elif name == "COPY":
            words = rest.split()
            chown = next((w.split("=", 1)[1] for w in words if w.startswith("--chown=")), None)
            paths = [w for w in words if not w.startswith("--")]
            want["copies"].append((paths[-1], chown))
    return want


def image(archive):
    """The image's config and {path: TarInfo} of all its layers, upper layers winning."""
    with tarfile.open(archive) as outer:
        def blob(digest):
            return outer.extractfile("blobs/" + digest.replace(":", "/")).read()

        index = json.loads(outer.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        files = {}
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            if layer["mediaType"].endswith("gzip"):
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                for member in t.getmembers():
                    files[member.name.lstrip("./").rstrip("/")] = member
        return config, files


def main(dockerfile, archive):
    want = expected(dockerfile)
    config, files = image(archive)
    got = config.get("config", {})
    problems = []

    def compare(what, expected_value, actual):
        if expected_value != actual:
            problems.append(f"{what}: the Dockerfile says {expected_value!r}, the image has {actual!r}")

    compare("USER", want["User"], got.get("User"))
    compare("WORKDIR", want["WorkingDir"], got.get("WorkingDir"))
    compare("ENV", want["Env"], dict(e.split("=", 1) for e in got.get("Env") or []))
    compare("LABEL", want["Labels"], got.get("Labels") or {})
    compare("EXPOSE", sorted(want["ExposedPorts"]), sorted((got.get("ExposedPorts") or {}).keys()))
    compare("ENTRYPOINT", want["Entrypoint"], got.get("Entrypoint"))
    compare("CMD", want["Cmd"], got.get("Cmd"))
    compare("architecture", "amd64", config.get("architecture"))
    for dest, chown in want["copies"]:
        path = dest.strip("/")
        member = files.get(path)
        if member is None:
            problems.append(f"COPY destination /{path} is not in the image")
            continue
        if chown is not None and f"{member.uid}:{member.gid}" != chown:
            problems.append(f"/{path} belongs to {member.uid}:{member.gid}, the Dockerfile says {chown}")
        if dest.endswith("/") and not member.isdir():
            problems.append(f"/{path} should be a directory")
    entry = (want["Entrypoint"] or want["Cmd"] or [""])[0].lstrip("/")
    binary = files.get(entry)
    if binary is None or not binary.isfile() or not binary.mode & 0o111:
        problems.append(f"the entry binary /{entry} is missing or not executable")
    problems += [f"/{s} exists: the image must have no shell" for s in SHELLS if s in files]
    bundle = files.get("etc/ssl/certs/ca-certificates.crt")
    if bundle is None or bundle.size < 100_000:
        problems.append("no CA bundle at /etc/ssl/certs/ca-certificates.crt")
    if "etc/passwd" not in files:
        problems.append("no /etc/passwd (the non-root user 65532 must have a name)")
    for p in problems:
        print(f"{archive}: {p}")
    if not problems:
        print(f"{archive}: matches {dockerfile} ({len(files)} files)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
