"""wf-jobrunner: runs job commands from the shared work queue and reports job events."""
