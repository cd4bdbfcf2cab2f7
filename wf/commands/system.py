"""Running the system: `wf up` (its flags checked, then wf/up.py), `wf setup` and `wf auth export` (for
a NATS server of your own), `wf ping SERVICE` (a healthcheck), `wf demo` and `wf bench` (each on a
system of its own, started through wf/launch.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
from pathlib import Path

import nats.errors

from schemas import subjects
from services.common.logs import configure_logging
from services.common.topology import ES_BUCKET, SERVICE_ROLES, ensure_topology, ensure_views
from services.safety.seed import seed_emergency_stops

from .. import auth, bench, launch, settings
from .. import client as wf_client
from ..up import UpOptions, free_port, run_up, write_env_file
from .common import connect, fail
from .workflows import cmd_erase_satellite

DEMO_SITE = "aap"


def _replicas(args: argparse.Namespace) -> dict[str, int]:
    """--replicas N for every service; then --scale SERVICE=N, --runners and --executors override it."""
    counts = dict.fromkeys(SERVICE_ROLES, args.replicas)
    for item in args.scale or []:
        name, _, count = item.partition("=")
        name = {"runner": "jobrunner", "runners": "jobrunner"}.get(name, name)
        if name not in counts or not count.isdigit():
            raise SystemExit(f"wf up: --scale wants SERVICE=N (N >= 0: 0 when you run it elsewhere) and SERVICE one of "
                             f"{', '.join(SERVICE_ROLES)}; got {item!r}")
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
        return fail("--tls-cert and --tls-key go together")
    if opts.stream_replicas > 1 and not opts.nats_url:
        return fail("--stream-replicas needs a cluster: use it with --nats-url (the embedded server is one node)")
    if opts.sync and opts.nats_url:
        return fail("--sync sets the embedded server's fsync; on your own server set sync_interval in its configuration")
    if opts.max_payload and opts.nats_url:
        return fail("--max-payload sets the embedded server's; on your own server set max_payload in its configuration")
    if opts.max_payload and not re.fullmatch(r"[1-9][0-9]*(KB|MB)?", opts.max_payload):
        return fail("--max-payload is a size such as 1MB, 256KB or 1048576")
    return asyncio.run(run_up(opts))


async def cmd_setup(args: argparse.Namespace) -> int:
    """What `wf up` does before starting services, for a NATS server (or cluster) of your own."""
    nc = await connect(args, role="admin")
    try:
        await ensure_topology(nc.jetstream(), replicas=args.stream_replicas)
        es = await seed_emergency_stops(await nc.jetstream().key_value(ES_BUCKET), Path(args.config_dir) / "es.json")
    finally:
        await nc.close()
    print(f"streams, consumers and buckets are in place (replicas {args.stream_replicas})")
    views_url = settings.views_nats_url()
    if views_url:
        views = await connect(args, role="views", url=views_url)
        try:
            await ensure_views(views.jetstream(), replicas=args.stream_replicas)
        finally:
            await views.close()
        print("the people's views (WF_EVENTS, KV_wf_status, KV_wf_es in the PEOPLE account) are in place")
    else:
        print("the people's views were not set up: set WF_VIEWS_NATS_URL (views.env of `wf auth export`)")
    print("emergency stops: " + (", ".join(f"{k} {v}" for k, v in sorted(es.items())) or "none (everything stopped)"))
    return 0


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


async def cmd_ping(args: argparse.Namespace) -> int:
    """Exit 0 when the service (or, with --id-file, that one instance) answers `$SRV.PING`: a healthcheck."""
    nc = await connect(args)
    try:
        subject = subjects.micro_ping(args.service)
        if args.id_file:
            subject = subjects.micro_ping_instance(args.service, Path(args.id_file).read_text().strip())
        await nc.request(subject, b"", timeout=args.timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        return fail(f"{args.service} did not answer $SRV.PING within {args.timeout:g} s ({type(exc).__name__}); "
                    "is it running? `wf up` starts it (its log says why it stopped)")
    finally:
        await nc.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the whole system in a temporary data dir, erase satellite aap, watch it, stop."""
    data_dir = Path(tempfile.mkdtemp(prefix="wf-demo-"))
    log_path = data_dir / "wf-up.log"
    port = free_port()
    print(f"starting the system (nats-server on 127.0.0.1:{port}, logs in {log_path}) ...")
    # its own session (Ctrl-C here is ours to handle), but it dies with us (a closed terminal)
    up = launch.start(data_dir, "--time-scale", str(args.time_scale), "--runners", "2", log_path=log_path, port=port,
                      own_session=True)
    try:
        try:
            up.wait_ready(60)
        except launch.NotReady as exc:
            raise SystemExit(f"wf: {exc}") from None
        settings.use_nats_url(wf_client.nats_url(data_dir))
        args.data_dir = str(data_dir)
        return asyncio.run(_demo_workflow(args))
    finally:
        up.stop(timeout_s=30)
        print(f"system stopped; logs and the JetStream store are in {data_dir}")


async def _demo_workflow(args: argparse.Namespace) -> int:
    args.site, args.watch, args.inventory_dir = DEMO_SITE, True, None
    return await cmd_erase_satellite(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """`wf bench [--quick] [--json] [--sync S]` (wf/bench/)."""
    return bench.run(args.quick, args.json, args.sync)
