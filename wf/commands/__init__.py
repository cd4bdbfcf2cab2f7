"""The `wf` commands, one module per group; wf/cli.py is the entry point that parses and runs them.

- parser.py: every command's arguments (`build_parser`);
- common.py: what every command shares: its connection (failing in one line), error replies' text;
- workflows.py: submit, exec, cancel, pause, resume, approve/deny, status (--watch), ls, history,
  logs, erase-satellite;
- es.py: emergency stops (`wf es stop|pause|go|show`);
- people.py: `wf user add|rm|ls`;
- system.py: running the system: up, setup, ping, auth export, demo, bench."""
