"""`wf user add NAME --role R`, `wf user rm NAME`, `wf user ls [--json]`: people, each with their own
credential, added and removed while the system runs (the registry and the server's reload: wf/users.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import nats
import nats.errors

from ..failures import Failure
from ..users import Paths, UserError, add, listing, push_roles, quiet, read_env_url, remove, tls_for

CHECK_WITHIN_S = 5.0


async def _can_connect(url: str) -> bool:
    try:
        nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False, connect_timeout=1, max_reconnect_attempts=0,
                                                 error_cb=quiet, tls=tls_for(url)), 2)
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    await nc.close()
    return True


async def _until(url: str, connects: bool) -> bool:
    """Whether the server came to (not) accept `url` within CHECK_WITHIN_S (its reload is quick)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + CHECK_WITHIN_S
    while True:
        if await _can_connect(url) == connects:
            return True
        if loop.time() > end:
            return False
        await asyncio.sleep(0.1)


def _roles_synced(paths: Paths, running: bool) -> None:
    """The roles approvers are ranked by (KV `wf_people`) follow the registry at once."""
    if running and not asyncio.run(push_roles(paths)):
        print(f"the running system's roles (KV wf_people) were not updated (no usable {paths.data_dir / 'admin.env'}); "
              "`wf up` updates them when it starts", file=sys.stderr)


def cmd_user(args: argparse.Namespace) -> int:
    """`wf user add NAME --role R`, `wf user rm NAME`, `wf user ls [--json]`."""
    paths = Paths(Path(args.data_dir).resolve())
    try:
        if args.action == "ls":
            people = listing(paths)
            if args.json:
                print(json.dumps(people))
            else:
                for person in people:
                    print(f"{person['name']:<20} {person['role']:<9} created {person['created']} by {person['by'] or '-'}"
                          f"  {person['env'] or '(no env file)'}")
            return 0
        if not args.name:
            raise Failure(f"wf user {args.action} needs a user name", "e.g. `wf user add alice --role operator`")
        if args.action == "add":
            env, reloaded = add(paths, args.name, args.role)
            print(f"added {args.name} ({args.role}); their credential: {env} (WF_NATS_URL; give it to {args.name} only)")
            if not reloaded:
                print("no running `wf up` here: it takes effect when `wf up` starts")
            elif not asyncio.run(_until(read_env_url(env) or "", connects=True)):
                raise Failure(f"the server did not accept {args.name} within {CHECK_WITHIN_S:.0f} s",
                              "check `wf up`'s log for a configuration reload error")
            _roles_synced(paths, reloaded)
            return 0
        env_url = read_env_url(paths.env(args.name))
        reloaded = remove(paths, args.name)
        print(f"removed {args.name}: their connections are closed and their credential refused; running work goes on")
        if not reloaded:
            print("no running `wf up` here: it takes effect when `wf up` starts")
        elif env_url and not asyncio.run(_until(env_url, connects=False)):
            raise Failure(f"the server still accepts {args.name} after {CHECK_WITHIN_S:.0f} s",
                          "check `wf up`'s log for a configuration reload error")
        _roles_synced(paths, reloaded)
        return 0
    except UserError as exc:
        raise Failure(str(exc), "see `wf user --help`") from None
