"""The `wf` command: runs the system (`wf up`) and talks to it over the contract's subjects."""
