"""wf-status: folds every event into the StatusResp projection (KV `wf_status`) and serves it."""
