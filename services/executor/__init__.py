"""wf-executor: runs executed workflows one Block at a time, emitting job commands under rate limits."""
