"""wf-intake: takes WorkReqs (`wf.api.submit`) and exec requests (`wf.api.exec`).

service.py main() (wiring); submit.py submit and upload; control.py exec, approve, deny, cancel,
pause and resume, whose refusals rules.py decides (pure); followers.py what intake keeps in memory
from the bus; workreq_limits.py the limits on one WorkReq (pure)."""
