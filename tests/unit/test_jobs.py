import pytest

from services.jobs import ArgError, JobRegistry
from services.jobs.sleep import SleepJob


def test_sleep_accepts_whole_seconds(jobs):
    jobs.validate("sleep", {"seconds": "60"})
    jobs.validate("sleep", {"seconds": "1"})


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "x", "", " "])
def test_sleep_refuses_anything_but_an_integer_of_at_least_one(jobs, value):
    with pytest.raises(ArgError) as err:
        jobs.validate("sleep", {"seconds": value})
    assert err.value.arg == "seconds"


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
    assert err.value.arg == "" and "'eraseEverything'" in err.value.message and "diskErase, sleep" in err.value.message


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
