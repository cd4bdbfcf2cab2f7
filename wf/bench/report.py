"""`wf bench`'s report: the result of wf/bench/measure.py as the lines `wf bench` prints (without
--json)."""

from __future__ import annotations

from typing import Any


def report(result: dict[str, Any]) -> str:
    def mr(d: dict[str, float], unit: str = "") -> str:
        return f"{d['median']}{unit} (range {d['min']}-{d['max']})"

    r = result
    lines = [
        f"wf bench{' --quick' if r['quick'] else ''}{' --sync ' + r['sync'] if r.get('sync', 'default') != 'default' else ''} "
        f"on {r['cores']} cores (medians of several runs, with range)",
        f"  throughput, {r['throughput_big']['jobs']} jobs in one workflow ({r['throughput_big']['shape']}): "
        f"{mr(r['throughput_big']['jobs_per_s'], ' jobs/s')}",
        f"  throughput, {r['throughput_small']['workflows']} workflows of {r['throughput_small']['jobs_each']} jobs at once: "
        f"{mr(r['throughput_small']['jobs_per_s'], ' jobs/s')}",
        f"  submit latency, {r['submit_latency_ms']['clients']} concurrent clients: p50 {mr(r['submit_latency_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['submit_latency_ms']['p99'], ' ms')}, at {mr(r['submit_latency_ms']['submits_per_s'], ' submits/s')}",
        f"  submit latency, the same clients on a clock at {r['submit_latency_paced_ms']['submits_per_s']} submits/s "
        f"(half that): p50 {mr(r['submit_latency_paced_ms']['p50'], ' ms')}, p99 {mr(r['submit_latency_paced_ms']['p99'], ' ms')}",
        f"  exec to first job started: p50 {mr(r['exec_to_first_job_ms']['p50'], ' ms')}, p99 {mr(r['exec_to_first_job_ms']['p99'], ' ms')}",
        f"  projection lag (event published to wf_status stored) at full load: p50 {mr(r['projection_lag_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['projection_lag_ms']['p99'], ' ms')}; as this client sees it: "
        f"p99 {mr(r['projection_lag_seen_by_client_ms']['p99'], ' ms')}",
        f"  emergency stop, {r['emergency_stop_ms']['workflows']} workflows running: p50 {mr(r['emergency_stop_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['emergency_stop_ms']['p99'], ' ms')}",
        *([f"  pause, {r['pause_ms']['workflows']} workflows running: p50 {mr(r['pause_ms']['p50'], ' ms')}, "
           f"p99 {mr(r['pause_ms']['p99'], ' ms')} (target 500); by the runner's clock p99 "
           f"{mr(r['pause_ms']['p99_by_job_clock'], ' ms')}; pause reply p99 {mr(r['pause_ms']['reply_p99'], ' ms')}; "
           f"at most {r['pause_ms']['started_after_request_max']} job(s) of one workflow seen starting after its request"]
          if "pause_ms" in r else []),
        "  scaling, ms per job: " + ", ".join(f"{k} jobs {v}" for k, v in r["scaling_ms_per_job"].items() if k != "ratio")
        + f" (ratio largest/smallest {r['scaling_ms_per_job']['ratio']}); CPU ms per job: "
        + ", ".join(f"{k} jobs {v}" for k, v in r["scaling_cpu_ms_per_job"].items() if k != "ratio")
        + f" (ratio {r['scaling_cpu_ms_per_job']['ratio']})",
        "  peak RSS: " + ", ".join(f"{k} {v} MB" for k, v in sorted(r["peak_rss_mb"].items())),
        "  CPU ms per job (big workflow): " + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_job"].items()),
        "  CPU ms per submit: " + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_submit"].items()),
        f"  bus ceiling here: publish_async {r['bus']['publish_async_per_s']}/s, fetch+ack {r['bus']['fetch_ack_per_s']}/s; "
        f"a job costs {r['bus']['publishes_per_job']} publishes + {r['bus']['deliveries_per_job']} deliveries, so one "
        f"connection could carry {r['bus']['one_connection_jobs_per_s']} jobs/s; the pipeline (several processes) reached "
        f"{r['bus']['pipeline_vs_one_connection']}x that",
    ]
    return "\n".join(lines)
