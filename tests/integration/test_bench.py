"""`wf bench --quick --json` runs end to end and reports every figure (a smoke test: no timing assertion)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_quick_benchmark_reports_every_figure():
    done = subprocess.run([sys.executable, "-m", "wf.cli", "bench", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["quick"] is True
    assert result["throughput_big"]["jobs"] == 2000 and result["throughput_big"]["jobs_per_s"]["median"] > 0
    assert result["throughput_small"]["jobs_per_s"]["min"] > 0
    for figure in ("submit_latency_ms", "submit_latency_paced_ms", "exec_to_first_job_ms", "emergency_stop_ms",
                   "projection_lag_ms", "projection_lag_seen_by_client_ms"):
        assert 0 < result[figure]["p50"]["median"] <= result[figure]["p99"]["max"], figure
    assert result["projection_lag_ms"]["samples"] > 0
    # pause: 0 when no job of a workflow was seen starting after its pause request
    pause = result["pause_ms"]
    assert pause["workflows"] == 20 and 0 <= pause["p50"]["median"] <= pause["p99"]["max"]
    assert 0 < pause["reply_p50"]["median"] <= pause["reply_p99"]["max"] and pause["p99_by_job_clock"]["max"] >= 0
    assert pause["started_after_request_max"] >= 0
    assert result["submit_latency_ms"]["submits_per_s"]["min"] > 0
    # the paced run offers half the capacity the saturated run measured
    offered = result["submit_latency_paced_ms"]["submits_per_s"]
    assert abs(offered - result["submit_latency_ms"]["submits_per_s"]["median"] * 0.5) <= 1
    assert set(result["peak_rss_mb"]) >= {"wf-intake", "wf-policy", "wf-executor", "wf-status", "wf-jobrunner"}
    for figure in ("cpu_ms_per_job", "cpu_ms_per_submit"):  # every process's share, summed
        assert set(result[figure]) >= {"wf-intake", "wf-policy", "wf-executor", "wf-status", "wf-jobrunner",
                                        "nats-server", "bench (client)", "total"}, figure
        assert result[figure]["total"] > 0
    assert set(result["scaling_ms_per_job"]) == set(result["scaling_cpu_ms_per_job"]) == {"1000", "5000", "ratio"}
    assert result["scaling_cpu_ms_per_job"]["5000"] > 0
    assert result["bus"]["publish_async_per_s"] > 0 and result["bus"]["fetch_ack_per_s"] > 0
    assert result["bus"]["one_connection_jobs_per_s"] > 0 and result["bus"]["pipeline_vs_one_connection"] > 0
