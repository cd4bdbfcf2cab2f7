"""`wf up`'s replica flags and the embedded server's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from wf.commands.parser import build_parser
from wf.commands.system import _replicas
from wf.up import write_server_config


def replicas(*argv: str) -> dict[str, int]:
    return _replicas(build_parser().parse_args(["up", *argv]))


def test_one_of_each_by_default_and_replicas_for_all() -> None:
    assert replicas() == {"intake": 1, "policy": 1, "executor": 1, "jobrunner": 1, "status": 1}
    assert set(replicas("--replicas", "3").values()) == {3}


def test_per_service_counts_override_replicas() -> None:
    counts = replicas("--replicas", "2", "--scale", "status=1", "--scale", "runner=4", "--executors", "3", "--scale", "intake=0")
    assert counts == {"intake": 0, "policy": 2, "executor": 3, "jobrunner": 4, "status": 1}


@pytest.mark.parametrize("bad", ["nosuch=2", "status=x", "status"])
def test_a_bad_scale_names_what_it_wants(bad: str) -> None:
    with pytest.raises(SystemExit, match="SERVICE=N"):
        replicas("--scale", bad)


def test_sync_always_reaches_the_server_configuration(tmp_path: Path) -> None:
    conf = write_server_config(tmp_path, 4222, sync="always").read_text()
    assert 'sync_interval: "always"' in conf
    assert "sync_interval" not in write_server_config(tmp_path, 4222).read_text()
