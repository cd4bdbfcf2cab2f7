import importlib.util
import json
from pathlib import Path

import pytest

from services.inventory import InventoryError, InventorySource, load_inventory

REPO = Path(__file__).resolve().parents[2]


def generator():
    spec = importlib.util.spec_from_file_location("generate", REPO / "data" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_files_are_what_the_generator_makes():
    gen = generator()
    assert (REPO / "data" / "sites.json").read_text() == gen.render(gen.sites())
    assert (REPO / "data" / "machines.json").read_text() == gen.render(gen.machines())
    assert gen.main(["--check"]) == 0


def test_the_seed_rule_gives_100_sites_34_satellites_1700_machines():
    inv = load_inventory(REPO / "data")
    assert len(inv.sites) == 100
    assert [s for s in inv.sites][:3] == ["aaa", "aab", "aac"] and "aba" in inv.sites and "adv" in inv.sites
    satellites = [s for s in inv.sites.values() if s.type == "satellite"]
    assert len(satellites) == 34
    assert sum(len(m) for m in inv.machines.values()) == 1700
    assert {s.name for s in inv.sites.values() if s.status == "decom"} == {"aap", "adg", "adv"}
    assert inv.machines_at("aap")[:3] == ["aa00", "aa01", "aa02"] and inv.machines_at("aap")[-1] == "ae09"
    assert inv.machines_at("aab") == []  # clusters list none


def write(tmp_path, sites, machines):
    (tmp_path / "sites.json").write_text("".join(json.dumps(s) + "\n" for s in sites))
    (tmp_path / "machines.json").write_text("".join(json.dumps(m) + "\n" for m in machines))


GOOD_SITE = {"Name": "aaa", "Type": "satellite", "Status": "decom"}


@pytest.mark.parametrize(
    "sites, machines, fragment",
    [
        ([{**GOOD_SITE, "Name": "AAA"}], [], "not three lowercase letters"),
        ([{**GOOD_SITE, "Name": "aaaa"}], [], "not three lowercase letters"),
        ([{**GOOD_SITE, "Type": "moon"}], [], "site type 'moon'"),
        ([{**GOOD_SITE, "Status": "gone"}], [], "site status 'gone'"),
        ([GOOD_SITE, GOOD_SITE], [], "listed twice"),
        ([{"Name": "aaa"}], [], "expected an object with string fields"),
        ([GOOD_SITE], [{"Name": "a1", "Site": "aaa"}], "not two letters and two digits"),
        ([GOOD_SITE], [{"Name": "aa01", "Site": "zzz"}], "not in sites.json"),
        ([GOOD_SITE], [{"Name": "aa01", "Site": "aaa"}, {"Name": "aa01", "Site": "aaa"}], "listed twice at site"),
    ],
)
def test_a_bad_inventory_fails_with_file_line_and_reason(tmp_path, sites, machines, fragment):
    write(tmp_path, sites, machines)
    with pytest.raises(InventoryError) as err:
        load_inventory(tmp_path)
    assert fragment in str(err.value)
    assert ".json:" in str(err.value)


def test_missing_files_and_broken_json_are_clear(tmp_path):
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path)
    (tmp_path / "sites.json").write_text("{oops\n")
    (tmp_path / "machines.json").write_text("")
    with pytest.raises(InventoryError, match=r"sites.json:1: not JSON"):
        load_inventory(tmp_path)


def test_a_source_sees_changes_to_the_files(tmp_path):
    write(tmp_path, [GOOD_SITE], [])
    source = InventorySource(tmp_path)
    assert source.current().site("aaa").status == "decom"
    write(tmp_path, [{**GOOD_SITE, "Status": "inService"}, {"Name": "aab", "Type": "cluster", "Status": "inService"}], [])
    assert source.current().site("aaa").status == "inService"


def test_files_that_are_not_utf8_are_clear_errors(tmp_path):
    from services.policy.registry import ConfigError, PolicyRegistry, builtin_policies, load_policy_config

    (tmp_path / "sites.json").write_bytes(b'{"Name": "a\xeba"}\n')
    (tmp_path / "machines.json").write_text("")
    with pytest.raises(InventoryError, match="not UTF-8 text"):
        load_inventory(tmp_path)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_policy_config(tmp_path / "sites.json", PolicyRegistry(builtin_policies()), None)
