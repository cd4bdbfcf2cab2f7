"""WorkReqs that do real work with the built-in jobs (docs/jobs.md), printed as JSON for `wf submit -`.

    # restart a service across hosts, two at a time; after each batch, the service's health check
    # must answer {"status": "ok"} before the next batch starts (a failed check stops the rest)
    python examples/real_work.py rolling-restart --hosts web01,web02,web03,web04 --batch 2 \\
        --user ops --command 'sudo systemctl restart app' --health-url https://app.example/health \\
        | wf submit -

    # the same over every machine of an inventory site
    python examples/real_work.py rolling-restart --site aaa --batch 5 --user ops \\
        --command 'sudo systemctl restart app' --health-url https://app.example/health | wf submit -

    # take one host out of a load balancer, wait until it is idle, do maintenance, put it back
    python examples/real_work.py drain-host --host web01 --lb-url https://lb.example/api \\
        --user ops --command 'sudo apt-get -y upgrade' --token-secret LB_TOKEN | wf submit -

Every WorkReq these make is refused unless its name's policies allow its hosts (allowHosts), URLs
(allowUrls) and jobs (restrictJobTypes): examples/policies.json shows the entries, to adapt to your
hosts and URLs and add to configs/policies.json (and a `go` for the name in configs/es.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROLLING_RESTART = "RollingRestart"
DRAIN_HOST = "DrainHost"


def ssh_job(desc: str, host: str, user: str, command: str, port: int, timeout_s: int) -> dict[str, Any]:
    # a command that ran may have done part of its work: one attempt; its failure stops the workflow
    return {"name": "ssh", "desc": desc, "args": {"host": host, "user": user, "command": command, "port": str(port),
                                                  "timeout": str(timeout_s), "attempts": "1", "fatal": "true"}}


def http_job(desc: str, method: str, url: str, *, body: str = "", expect_json: str = "", attempts: int = 1,
             token_secret: str = "") -> dict[str, Any]:
    args = {"method": method, "url": url, "timeout": "10", "attempts": str(attempts), "fatal": "true"}
    headers = {}
    if body:
        args["body"] = body
        headers["Content-Type"] = "application/json"
    if token_secret:
        headers["Authorization"] = f"secret:{token_secret}"  # resolved by the runner, never in the WorkReq
    if headers:
        args["headers"] = json.dumps(headers)
    if expect_json:
        args["expect_json"] = expect_json
    return {"name": "http", "desc": desc, "args": args}


def rolling_restart(hosts: list[str], batch: int, user: str, command: str, health_url: str, *,
                    port: int = 22, expect_json: str = "status=ok", checks: int = 5) -> dict[str, Any]:
    """A block per batch of `batch` hosts (all of a batch at once), each followed by a block with
    one health check: `checks` attempts (1, 2, 4, 8 s apart) until it answers 2xx with `expect_json`;
    a batch or a check that fails for good is fatal, so no later batch is touched."""
    if batch < 1 or not hosts:
        raise ValueError("need at least one host and a batch of at least 1")
    batches = [hosts[i:i + batch] for i in range(0, len(hosts), batch)]
    blocks: list[dict[str, Any]] = []
    for n, group in enumerate(batches, start=1):
        blocks.append({"desc": f"restart batch {n} of {len(batches)}: {', '.join(group)}", "rate_limit": len(group),
                       "jobs": [ssh_job(f"restart on {h}", h, user, command, port, 300) for h in group]})
        blocks.append({"desc": f"health check after batch {n}: the next batch waits for it", "rate_limit": 1,
                       "jobs": [http_job(f"GET {health_url}", "GET", health_url, expect_json=expect_json,
                                         attempts=checks)]})
    return {"name": ROLLING_RESTART, "desc": f"restart across {len(hosts)} hosts, {batch} at a time, "
            "each batch gated by a health check", "blocks": blocks}


def drain_host(host: str, lb_url: str, user: str, command: str, *, port: int = 22, token_secret: str = "",
               idle_checks: int = 6) -> dict[str, Any]:
    """Drain `host` at the load balancer's API, wait until it reports no active connections, run the
    maintenance command over SSH, undrain, and check the host is back in service. Each step is its
    own block, each fatal: a host that is not idle is never touched, and one whose maintenance failed
    stays drained for a person to look at."""
    lb = lb_url.rstrip("/")
    body = json.dumps({"host": host})
    return {"name": DRAIN_HOST, "desc": f"drain {host}, maintenance, undrain", "blocks": [
        {"desc": "drain", "rate_limit": 1,
         "jobs": [http_job(f"drain {host}", "POST", f"{lb}/drain", body=body, token_secret=token_secret)]},
        {"desc": "wait until idle", "rate_limit": 1,
         "jobs": [http_job(f"{host} has no active connections", "GET", f"{lb}/hosts/{host}", expect_json="active=0",
                           attempts=idle_checks, token_secret=token_secret)]},
        {"desc": "maintenance", "rate_limit": 1,
         "jobs": [ssh_job(f"maintenance on {host}", host, user, command, port, 1800)]},
        {"desc": "undrain", "rate_limit": 1,
         "jobs": [http_job(f"undrain {host}", "POST", f"{lb}/undrain", body=body, token_secret=token_secret)]},
        {"desc": "back in service", "rate_limit": 1,
         "jobs": [http_job(f"{host} is in service", "GET", f"{lb}/hosts/{host}", expect_json="state=active",
                           attempts=3, token_secret=token_secret)]},
    ]}


def _site_hosts(site: str, inventory_dir: str | None) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from services.inventory import load_inventory  # the checkout's inventory code, run from anywhere

    inventory = load_inventory(Path(inventory_dir) if inventory_dir else Path(__file__).resolve().parents[1] / "data")
    if inventory.site(site) is None:
        raise SystemExit(f"real_work.py: site {site!r} is not in the inventory")
    return [f"{machine}.{site}" for machine in inventory.machines_at(site)]  # MACHINE.SITE: names repeat across sites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="example", required=True)
    rr = sub.add_parser("rolling-restart", help="restart across hosts in batches, each gated by a health check")
    where = rr.add_mutually_exclusive_group(required=True)
    where.add_argument("--hosts", help="comma-separated hosts (inventory machines or addresses)")
    where.add_argument("--site", help="every machine of this inventory site")
    rr.add_argument("--inventory-dir")
    rr.add_argument("--batch", type=int, default=2)
    rr.add_argument("--health-url", required=True)
    rr.add_argument("--expect-json", default="status=ok")
    rr.add_argument("--checks", type=int, default=5, help="health check attempts (1, 2, 4, 8 s apart)")
    dh = sub.add_parser("drain-host", help="drain, maintenance, undrain")
    dh.add_argument("--host", required=True)
    dh.add_argument("--lb-url", required=True, help="the load balancer's API: POST /drain, /undrain; GET /hosts/HOST")
    dh.add_argument("--token-secret", default="", help="the runner's secret holding the API's bearer token")
    for p in (rr, dh):
        p.add_argument("--user", required=True)
        p.add_argument("--command", required=True)
        p.add_argument("--port", type=int, default=22)
    args = parser.parse_args(argv)
    if args.example == "rolling-restart":
        hosts = [h for h in args.hosts.split(",") if h] if args.hosts else _site_hosts(args.site, args.inventory_dir)
        try:
            req = rolling_restart(hosts, args.batch, args.user, args.command, args.health_url, port=args.port,
                                  expect_json=args.expect_json, checks=args.checks)
        except ValueError as exc:
            print(f"real_work.py: {exc}", file=sys.stderr)
            return 1
    else:
        req = drain_host(args.host, args.lb_url, args.user, args.command, port=args.port, token_secret=args.token_secret)
    json.dump(req, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
