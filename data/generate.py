"""Generate the sample inventory (`sites.json`, `machines.json`) from the seed's rule.

100 sites named with three letters counting up from `aaa` (the third letter runs a..z, then the
second advances); site i (0-based) is a `satellite` when i % 3 == 0, else a `cluster`; all are
`inService` except `aap`, `adg` and `adv`, which are `decom`; every satellite has 50 machines,
`aa00`..`aa09` through `ae00`..`ae09`; clusters list none.

    python data/generate.py            # rewrite the files beside this script
    python data/generate.py --check    # exit 1 if they differ from what the rule gives
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

SITES = 100
DECOM = frozenset({"aap", "adg", "adv"})
MACHINE_PREFIXES = ("aa", "ab", "ac", "ad", "ae")


def site_name(i: int) -> str:
    letters = string.ascii_lowercase
    return letters[i // 676] + letters[(i // 26) % 26] + letters[i % 26]


def sites() -> list[dict[str, str]]:
    return [
        {
            "Name": site_name(i),
            "Type": "satellite" if i % 3 == 0 else "cluster",
            "Status": "decom" if site_name(i) in DECOM else "inService",
        }
        for i in range(SITES)
    ]


def machines() -> list[dict[str, str]]:
    return [
        {"Name": f"{prefix}{n:02d}", "Site": site["Name"]}
        for site in sites()
        if site["Type"] == "satellite"
        for prefix in MACHINE_PREFIXES
        for n in range(10)
    ]


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    files = {here / "sites.json": render(sites()), here / "machines.json": render(machines())}
    if "--check" in argv:
        stale = [str(path) for path, text in files.items() if not path.is_file() or path.read_text() != text]
        if stale:
            print("differs from the generator: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
