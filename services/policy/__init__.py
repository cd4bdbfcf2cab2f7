"""wf-policy: validates every job of a submitted WorkReq and runs the policies for its name."""
