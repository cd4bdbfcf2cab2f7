import pytest

from services.jobs import ArgError, JobRegistry, parse_whole_number
from services.jobs.sleep import SleepJob


def test_sleep_accepts_whole_seconds(jobs):
    jobs.validate("sleep", {"seconds": "60"})
    jobs.validate("sleep", {"seconds": "1"})


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "x", "", " "])
def test_sleep_refuses_anything_but_an_integer_of_at_least_one(jobs, value):
    with pytest.raises(ArgError) as err:
        jobs.validate("sleep", {"seconds": value})
    assert err.value.arg == "seconds"


@pytest.mark.parametrize("value", [
    "1_0", "+5", " 5", "5 ", "1e3", "0x10", "\u0665", "\u00b2", "5\n", "10" + "0" * 28, "9" * 400, "86401",
])
def test_sleep_seconds_are_plain_digits_up_to_a_day(jobs, value):
    """What Python's int() accepts (underscores, signs, white space, other scripts' digits, any
    size) is not a number of seconds here."""
    with pytest.raises(ArgError) as err:
        jobs.validate("sleep", {"seconds": value})
    assert err.value.arg == "seconds"
    assert "from 1 to 86,400 in plain digits" in err.value.message
    assert len(err.value.message) < 200, "a 400-digit value is not echoed whole"


def test_sleep_accepts_a_day_and_leading_zeros(jobs):
    jobs.validate("sleep", {"seconds": "86400"})
    jobs.validate("sleep", {"seconds": "060"})


def test_parse_whole_number_is_the_helper_for_plugins():
    assert parse_whole_number("n", "42", 0, 100) == 42
    with pytest.raises(ArgError, match=r"'n' must be a whole number from 0 to 100 in plain digits, got 101"):
        parse_whole_number("n", "101", 0, 100)


def test_a_runner_reports_any_failure_of_a_gate_as_fatal(jobs):
    from schemas import JobCommand
    from services.jobrunner.runner import JobRunner
    from services.safety.stops import EmergencyStops

    runner = JobRunner(None, jobs, 0.0, EmergencyStops(), max_deliveries=5)  # type: ignore[arg-type]

    def cmd(name):
        return JobCommand(id="W", block=0, job=0, name=name, args={}, at=0.0)

    assert runner._failed(cmd("tokenBucket"), 1, "job crashed: DecodeError()").fatal
    assert runner._failed(cmd("validateDecom"), 5, "gave up after 5 deliveries").fatal
    assert not runner._failed(cmd("tokenBucket"), 1, "flaky", retrying=True).fatal  # another attempt follows
    assert not runner._failed(cmd("sleep"), 1, "job crashed").fatal
    assert runner._failed(cmd("noSuchJob"), 1, "unknown job").fatal


def test_unknown_missing_and_extra_arguments_name_the_argument(jobs):
    with pytest.raises(ArgError) as err:
        jobs.validate("sleep", {})
    assert err.value.arg == "seconds" and "missing" in err.value.message
    with pytest.raises(ArgError) as err:
        jobs.validate("sleep", {"seconds": "1", "minutes": "2"})
    assert err.value.arg == "minutes" and "unknown argument" in err.value.message


def test_an_unknown_job_is_refused_listing_the_registered_ones(jobs):
    with pytest.raises(ArgError) as err:
        jobs.validate("eraseEverything", {})
    assert err.value.arg == "" and "'eraseEverything'" in err.value.message and "diskErase, exec, http, sleep, ssh" in err.value.message


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        JobRegistry([SleepJob(), SleepJob()])


def test_a_plugin_job_whose_name_is_taken_is_refused_naming_its_entry_point(job_env, monkeypatch):
    from importlib.metadata import EntryPoint

    import services.common.plugins as plugins_module
    import services.jobs as jobs_module

    duplicate = EntryPoint(name="mySleep", value="tests.unit.test_jobs:sleep_factory", group="wf.jobs")
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [duplicate] if group == "wf.jobs" else [])
    with pytest.raises(ValueError, match=r"job 'sleep' from entry point 'mySleep' \(tests.unit.test_jobs:sleep_factory\) is already registered"):
        jobs_module.load_jobs(job_env)


def sleep_factory(env):
    """An entry point's factory for a job whose name is already taken."""
    return SleepJob()


def test_a_plugin_that_fails_to_import_is_a_clear_start_up_error(job_env, monkeypatch):
    from importlib.metadata import EntryPoint

    import services.common.plugins as plugins_module
    import services.jobs as jobs_module

    broken = EntryPoint(name="broken", value="no_such_module_anywhere:factory", group="wf.jobs")
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [broken])
    with pytest.raises(ValueError, match=r"job entry point 'broken' \(no_such_module_anywhere:factory\) failed to load"):
        jobs_module.load_jobs(job_env)
