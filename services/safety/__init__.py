"""The emergency stop: KV `wf_es`, WorkReq name -> `go`, `pause` or `stop` (missing or anything else: stop).

Where a stop acts (each service reacts on its own; none waits for another):

| who | what it does on `stop` (`pause`) | where |
|---|---|---|
| every service | follows `wf_es` (rollups and purges included) | safety/stops.py `EmergencyStops.follow`, started in each main() |
| every service | registers its reaction to a change | safety/stops.py `EmergencyStops.on_change(listener)`: the one registration API |
| wf-intake | refuses submit with 423 | intake/submit.py `Submits._record_submission` -> intake/rules.py `stop_refusal` |
| wf-intake | refuses exec with 423 | intake/control.py `Control.exec` -> intake/rules.py `exec_refusal` |
| wf-intake | reports what it enforces in `$SRV.STATS` | safety/stops.py `EmergencyStops.stats_data` (intake/service.py `main`) |
| wf-intake | writes people's changes with who/when/why | safety/gate.py `EsGate` (intake/service.py `main` subscribes it) |
| wf-executor | halts the workflows of the name it owns (pause: dispatches nothing new) | executor/service.py `Executor.on_emergency_stop` -> executor/actor.py `WorkflowActor.request_stop("es")` / `set_es_paused` |
| wf-executor | stops a workflow it takes over (after a crash) | executor/actor.py `WorkflowActor._on_caught_up` |
| wf-executor | stops a workflow when a runner cancelled one of its jobs for the stop | executor/progress.py `WorkflowProgress.apply` (`ES_CANCELLED`), then `halt_reason` |
| wf-jobrunner | cancels the running jobs of the name (their tasks) | jobrunner/runner.py `JobRunner.on_emergency_stop` -> `JobRunner._cancel` |
| wf-jobrunner | drops not-yet-started commands of the name, unrun | jobrunner/runner.py `JobRunner._facts` (`es_stopped`) -> jobrunner/verdict.py `verdict` |
| wf-status | shows `was_es_stopped` | status/fold.py `apply` (from the `workflow.*` event) |
| `wf es stop/go/show` | writes a name; prints what intake enforces | wf/commands/es.py `cmd_es` -> safety/stops.py `enforced_emergency_stops`, `read_emergency_stops` |
| `wf up`, `wf setup` | seed the bucket from configs/es.json | wf/up.py `System.run`, wf/commands/system.py `cmd_setup` -> safety/seed.py `seed_emergency_stops` |

So an emergency stop halts running work in two places at once: the executor (no new command for the
name: `Executor.on_emergency_stop`) and the runners (running jobs cancelled, queued ones dropped:
`JobRunner.on_emergency_stop`). docs/safety.md says what an operator sees.

The modules:
- `stops`: the follower (`EmergencyStops`) and its pure view (`EsView`), es.json's format, and
  `wf es show`'s readers;
- `seed`: `wf up`'s seeding of the bucket from configs/es.json;
- `gate`: wf-intake's gate through which every person's write to the bucket passes, recorded with
  who made it.
"""
