from functools import partial

from .service import harden_process  # first: nothing may read the runner before it is not dumpable

harden_process()

from services.common.lifecycle import run_service  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.jobs.output import Secrets  # noqa: E402

from .service import main  # noqa: E402

# one copy of the secrets, read before the environment is scrubbed (service.main): the runner's log
# never shows one of them, whoever logged it (a job, nats-py, a traceback)
secrets = Secrets.from_environ(Settings.from_env().secret_settings)
run_service("wf-jobrunner", partial(main, secrets=secrets), redact_logs=secrets.redact)
