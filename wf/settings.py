"""Every WF_* setting the `wf` command reads from its environment: read here, nowhere else in wf/.

Each is read when it is asked for (not at import), so a setting changed in this process (a test's
monkeypatch, `wf demo` pointing itself at the system it started) is seen. What `wf up` hands on to
its children (`dict(os.environ)` plus their own WF_* values) is not read here: it is passed on.
The services' own settings are read by services/common/settings.py."""

from __future__ import annotations

import os

DEFAULT_PEOPLE_STORE_BYTES = 10 * 1024**3
DEFAULT_WEDGED_AFTER_S = 10.0


def nats_url() -> str | None:
    """WF_NATS_URL: the server and credential every command connects with (else `<data-dir>/<role>.env`)."""
    return os.environ.get("WF_NATS_URL") or None


def use_nats_url(url: str) -> None:
    """Point this process's commands at `url` (`wf demo`, at the system it started), whatever WF_NATS_URL said."""
    os.environ["WF_NATS_URL"] = url


def views_nats_url() -> str | None:
    """WF_VIEWS_NATS_URL: `wf setup`'s `views` credential (views.env of `wf auth export`); unset: no views set up."""
    return os.environ.get("WF_VIEWS_NATS_URL") or None


def inventory_dir() -> str | None:
    """WF_INVENTORY_DIR: sites.json and machines.json for `wf erase-satellite` (when --inventory-dir is not given)."""
    return os.environ.get("WF_INVENTORY_DIR") or None


def debug() -> bool:
    """WF_DEBUG: anything but empty or 0 is `wf --debug` (tracebacks and nats-py's errors too)."""
    return os.environ.get("WF_DEBUG", "") not in ("", "0")


def log_level() -> str:
    """WF_LOG_LEVEL: `wf up`'s default --log-level (default info)."""
    return os.environ.get("WF_LOG_LEVEL", "info")


def nats_server() -> str | None:
    """WF_NATS_SERVER: the nats-server binary `wf up` runs when --nats-server is not given."""
    return os.environ.get("WF_NATS_SERVER")


def wedged_after_s() -> float:
    """WF_WEDGED_AFTER_S: a service alive but silent to `$SRV.PING` this long is killed by `wf up` (default 10)."""
    return float(os.environ.get("WF_WEDGED_AFTER_S", str(DEFAULT_WEDGED_AFTER_S)))


def nats_ca() -> str | None:
    """WF_NATS_CA: the CA file (or the server's self-signed certificate) a `tls://` connection trusts."""
    return os.environ.get("WF_NATS_CA") or None


def trust_ca_default(cert_file: str) -> None:
    """WF_NATS_CA, unless already set, becomes `cert_file` (`wf up --tls-cert`: its self-signed certificate
    is its own CA), for this process's connections and every service's environment."""
    os.environ.setdefault("WF_NATS_CA", cert_file)


def people_store_bytes() -> int:
    """WF_PEOPLE_STORE_BYTES: the most the PEOPLE account's views may store on disk (default 10 GiB);
    not a number: the default."""
    try:
        return max(1, int(os.environ.get("WF_PEOPLE_STORE_BYTES", DEFAULT_PEOPLE_STORE_BYTES)))
    except ValueError:
        return DEFAULT_PEOPLE_STORE_BYTES
