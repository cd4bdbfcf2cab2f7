"""wf-intake: takes WorkReqs (`wf.api.submit`) and exec requests (`wf.api.exec`)."""
