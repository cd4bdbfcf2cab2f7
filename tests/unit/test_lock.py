"""The lock files pin every dependency pyproject.toml names, within its ranges, with hashes (`make lock`)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, its hashes)} of a lock file."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    current = ""
    for line in (REPO / name).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            found[current] = (match.group(2), frozenset())
        elif current and (hashed := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            version, hashes = found[current]
            found[current] = (version, hashes | {hashed.group(1)})
    return found


def check(requirements: list[str], locked: dict[str, tuple[str, frozenset[str]]]) -> None:
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in the lock: run `make lock`"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), \
            f"{name}=={version} is outside {req.specifier}: run `make lock`"


def test_every_runtime_and_dev_dependency_is_pinned_within_its_range():
    locked = pins("requirements.lock")
    check(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["dev"], locked)
    assert all(hashes for _, hashes in locked.values()), "every pin has its hashes (--generate-hashes)"


def test_the_runtime_lock_is_the_same_resolution_without_the_dev_dependencies():
    full, runtime = pins("requirements.lock"), pins("requirements-runtime.lock")
    check(PYPROJECT["dependencies"], runtime)
    for name, pinned in runtime.items():
        assert full.get(name) == pinned, f"{name} differs between the two locks: run `make lock`"
    dev_only = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["optional-dependencies"]["dev"]}
    assert not dev_only & set(runtime)
