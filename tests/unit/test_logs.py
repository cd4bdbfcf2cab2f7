"""`bound` binds log context for a block and restores what was there, as structlog's own does."""

import structlog

from services.common.logs import bound


def test_bound_sets_keys_for_the_block_and_restores_them_after() -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service="wf-test")
    with bound(workflow_id="a"):
        assert structlog.contextvars.get_contextvars() == {"service": "wf-test", "workflow_id": "a"}
        with bound(workflow_id="b", block=1):
            assert structlog.contextvars.get_contextvars() == {"service": "wf-test", "workflow_id": "b", "block": 1}
        assert structlog.contextvars.get_contextvars() == {"service": "wf-test", "workflow_id": "a"}
    assert structlog.contextvars.get_contextvars() == {"service": "wf-test"}
    structlog.contextvars.clear_contextvars()
