"""The commands on workflows: `wf submit`, `exec`, `cancel`, `pause`, `resume`, `approve`/`deny`,
`status` (and `--watch`), `ls`, `history`, `logs` and `erase-satellite` (the seed's client)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from services.common.settings import REPO_ROOT
from services.common.topology import STATUS_BUCKET
from services.inventory import InventoryError, load_inventory

from .. import client, settings
from .. import history as wf_history
from .. import logs as wf_logs
from .. import ls as wf_ls
from ..erase import EraseRefused, erase_satellite_workreq
from ..render import TERMINAL, list_table, render, summary_line
from .common import connect, error_text, fail


async def cmd_submit(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    nc = await connect(args)
    try:
        reply = await client.submit(nc, data)
    except client.WfError as err:
        if "id" in err.body:
            print(f"{err.body['id']} rejected")
        return fail(error_text(err))
    finally:
        await nc.close()
    print(f"{reply['id']} {reply['verdict']}")
    return 0


async def _id_command(args: argparse.Namespace, call) -> int:
    """`wf exec ID` and `wf cancel ID`: one request, the id printed on success."""
    nc = await connect(args)
    try:
        reply = await call(nc, args.id)
    except client.WfError as err:
        return fail(error_text(err))
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


async def cmd_decide(args: argparse.Namespace) -> int:
    """The two-person rule, `args.decision`: `wf approve ID [--comment TEXT]` prints `ID approved (N of M
    approvals)`; `wf deny ID --comment TEXT` ends the workflow rejected and prints `ID denied`."""
    call = client.approve if args.decision == "approve" else client.deny
    nc = await connect(args)
    try:
        reply = await call(nc, args.id, args.comment)
    except client.WfError as err:
        return fail(error_text(err))
    finally:
        await nc.close()
    if args.decision == "approve":
        print(f"{reply['id']} approved ({reply.get('approvals')} of {reply.get('approvals_needed')} approvals)")
    else:
        print(f"{reply['id']} denied")
    return 0


async def cmd_ls(args: argparse.Namespace) -> int:
    """Workflows from the projection (KV `wf_status`), newest first (ids are time-ordered), filtered
    (wf/ls.py; every filter given must hold)."""
    try:
        filters = ls_filters(args, time.time())
    except ValueError as exc:
        return fail(f"{exc}; see `wf ls --help`")
    if args.limit < 0:
        return fail("--limit cannot be negative; see `wf ls --help`")
    nc = await connect(args)
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


def exit_code(status: dict) -> int:
    """For scripts waiting on `wf status --watch`: 0 completed, 1 failed or rejected."""
    return 0 if status["status"] == "completed" else 1


async def cmd_status(args: argparse.Namespace) -> int:
    nc = await connect(args)
    try:
        try:
            status = await client.status(nc, args.id)
        except client.WfError as err:
            return fail(error_text(err))
        if args.watch:
            status = await watch(nc, args.id, status, as_json=args.json)
            return exit_code(status)
        print(json.dumps(status, indent=2) if args.json else render(status))
        return 0
    finally:
        await nc.close()


def _finished(status: dict) -> bool:
    return status["status"] in TERMINAL or status["verdict"] == "rejected"


async def watch(nc: Client, wf_id: str, status: dict, *, as_json: bool = False) -> dict:
    """Follow a workflow's StatusResp in KV `wf_status` until it ends; returns the final one."""
    tty = sys.stdout.isatty() and not as_json
    shown = ""

    def show(current: dict) -> None:
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


async def cmd_history(args: argparse.Namespace) -> int:
    """`wf history ID [--json]` (wf/history.py)."""
    return await wf_history.run(args, connect)


async def cmd_logs(args: argparse.Namespace) -> int:
    """`wf logs ID BLOCK JOB` (wf/logs.py)."""
    return await wf_logs.run(args, connect, error_text)


def _inventory_dir(args: argparse.Namespace) -> Path:
    return Path(args.inventory_dir or settings.inventory_dir() or REPO_ROOT / "data")


async def cmd_erase_satellite(args: argparse.Namespace) -> int:
    try:
        workreq = erase_satellite_workreq(load_inventory(_inventory_dir(args)), args.site)
    except (EraseRefused, InventoryError) as exc:
        return fail(str(exc))
    nc = await connect(args)
    try:
        try:
            reply = await client.submit(nc, json.dumps(workreq).encode())
            print(f"submitted {reply['id']}: {reply['verdict']}")
            await client.execute(nc, reply["id"])
        except client.WfError as err:
            return fail(error_text(err))
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
