#!/usr/bin/env python3
"""Fails when a dependency arrow that must never exist appears.

Reads the workspace's crates from `cargo metadata` and their sources, and
checks the rules docs/ARCHITECTURE.md lists under "Arrows that must never
exist": the pure crates stay free of IO, runtimes never import the peer,
libraries never import the binary or the black-box tests, and no two
modules of a crate import each other.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

# Plain synchronous Rust over plain data: no async runtime, no storage, no
# network, no clock or randomness of their own.
PURE = {"flotilla-api", "flotilla-store", "flotilla-scheduler", "flotilla-controllers", "flotilla-control", "flotilla-fence"}
# What a pure crate must not depend on, beyond the workspace's IO crates.
IO_CRATES = {"tokio", "tonic", "rocksdb", "openraft", "bollard", "hyper", "rand", "tower", "turmoil"}
# What a pure crate's sources must not call: clocks, randomness, files,
# sockets, processes.
IO_CALLS = re.compile(
    r"SystemTime::now|Instant::now|\btokio::|\bstd::fs::|\bstd::net::|\bstd::process::|\brand::"
)
# Crates below the peer: they are wired by it and must never reach up.
BELOW_PEER = {"flotilla-runtime", "flotilla-agent", "flotilla-raft", "flotilla-client", "flotilla-proto"}
ABOVE = {"flotilla-peer", "flotilla"}
# The black-box tests and the binary are leaves: no library builds on them
# (the benchmarks use the test kit, flotilla-testkit).
LEAVES = {"flotilla-blackbox", "flotilla"}


def non_test_sources(package):
    root = Path(package["manifest_path"]).parent / "src"
    for path in root.rglob("*.rs"):
        parts = path.relative_to(root).parts
        if "tests" in parts or path.stem.endswith("_tests") or path.stem == "tests":
            continue
        yield path


def strip_test_modules(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks, which may use anything."""
    out, i = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if match.start() < i:
            continue
        out.append(text[i : match.start()])
        depth, j = 1, match.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_cycles(package):
    """Pairs of a crate's top-level modules that import each other (the
    crate root, which declares them all, aside)."""
    root = Path(package["manifest_path"]).parent / "src"
    uses = {}
    for path in root.rglob("*.rs"):
        top = path.relative_to(root).parts[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        text = strip_test_modules(path.read_text())
        refs = set(re.findall(r"crate::(\w+)", text))
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            refs |= {item.strip().split("::")[0] for item in group.split(",") if item.strip()}
        uses.setdefault(top, set()).update(refs - {top})
    return sorted((a, b) for a in uses for b in uses[a] if a < b and a in uses.get(b, ()))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    workspace = {p["name"] for p in metadata["packages"]}
    problems = []
    for package in metadata["packages"]:
        name = package["name"]
        deps = {d["name"] for d in package["dependencies"] if d["kind"] is None}
        if name in PURE:
            for dep in sorted(deps & (IO_CRATES | (workspace - PURE))):
                problems.append(f"{name} is pure but depends on {dep}")
            for path in non_test_sources(package):
                for number, line in enumerate(strip_test_modules(path.read_text()).splitlines(), 1):
                    if IO_CALLS.search(line) and not line.lstrip().startswith("//"):
                        problems.append(f"{path}:{number}: a pure crate does IO: {line.strip()}")
        if name in BELOW_PEER:
            for dep in sorted(deps & ABOVE):
                problems.append(f"{name} sits below the peer but depends on {dep}")
        for a, b in module_cycles(package):
            problems.append(f"{name}: modules {a} and {b} import each other")
        for dep in sorted(deps & LEAVES):
            problems.append(f"{name} depends on {dep}, which nothing may build on")
    for problem in problems:
        print(f"arrows: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"arrows: {len(metadata['packages'])} crates, no forbidden arrow")


if __name__ == "__main__":
    main()
