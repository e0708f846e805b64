"""Print the pip requirements of pyproject.toml's dependencies plus the given extras.

Run from the folder holding pyproject.toml. The Dockerfile uses it to install dependencies in
a layer before the code is copied:
    python requirements.py serve gpu > /tmp/requirements.txt
An argument `extra:package` adds one requirement of an extra (e.g. `dev:locust`). With the
`gpu` extra the CPU builds it replaces (onnxruntime, faiss-cpu) are dropped: both provide the
same import name and must never be installed side by side.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

GPU_REPLACES = {"onnxruntime", "faiss-cpu"}


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    if match is None:
        raise ValueError(f"unparsable requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(pyproject: Path, selectors: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    chosen: list[str] = list(project.get("dependencies", []))
    for selector in selectors:
        extra, _, package = selector.partition(":")
        if extra not in extras:
            raise SystemExit(f"unknown extra {extra!r}; pyproject has {sorted(extras)}")
        picked = [r for r in extras[extra] if not package or requirement_name(r) == package]
        if not picked:
            raise SystemExit(f"extra {extra!r} has no requirement named {package!r}")
        chosen.extend(picked)
    if "gpu" in selectors:
        chosen = [r for r in chosen if requirement_name(r) not in GPU_REPLACES]
    return list(dict.fromkeys(chosen))


def main(argv: list[str]) -> None:
    print("\n".join(requirements(Path("pyproject.toml"), argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
