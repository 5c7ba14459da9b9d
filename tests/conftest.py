"""Shared test setup: offline, quiet, and generated assets kept out of the user's home."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
if "PYTEST_XDIST_WORKER" in os.environ:
    # the suite runs one worker per core (make test): each computes on one thread, so workers do
    # not fight over the cores (a CPU training run computes on one thread anyway)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture
def wide_console(monkeypatch) -> None:
    """Tables keep whole paths on one line, in this process and in child processes."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def one_cpu_thread():
    """torch on one thread for a module's tests, as a CPU training run computes (and as `make
    test`'s workers already are when started by pytest alone)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_hang():
    """A scripted wizard that runs out of keys would wait for input forever: after PATIENCE, the
    stacks are printed and the test process ends, so the run fails loudly instead of hanging."""
    import faulthandler

    from tests.support.patience import PATIENCE

    faulthandler.dump_traceback_later(PATIENCE, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def saved(tmp_path) -> Path:
    """The wizard's saved-configs folder of a test."""
    return tmp_path / "saved_configs"


@pytest.fixture
def queue_dir(tmp_path) -> Path:
    """tmp/queue/{a,b,c}.json training tmp/data into tmp/out (tests/support/queue_fakes.py)."""
    from tests.support.queue_fakes import queue_of_three

    return queue_of_three(tmp_path)


@pytest.fixture
def calls():
    """The queue's fake trainer, recording the output names of the runs it trained, in order."""
    from tests.support.queue_fakes import Recording

    return Recording()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory) -> Path:
    """Generated assets (the sample dataset) go to a per-session folder, never ~/.cache."""
    home = tmp_path_factory.mktemp("lora-wizard-home")
    os.environ["LORA_WIZARD_HOME"] = str(home)
    return home


def _build_default_key_bindings_once() -> None:
    """prompt_toolkit builds its default key bindings (a few hundred) again for every question, a
    third of what a scripted wizard question costs; the bindings are the same each time and read
    their state from the running application, so the tests build them once."""
    from functools import cache

    import prompt_toolkit.application.application as application

    application.load_key_bindings = cache(application.load_key_bindings)


_build_default_key_bindings_once()


#: the files whose tests take longest (seconds on an idle 2-core machine, in brackets), longest
#: first: with one worker per core and a file's tests on one worker, a long file started last would
#: leave the other cores idle at the end. `make test` keeps this order (--no-loadscope-reorder).
SLOW_FILES_FIRST = (
    "test_multiprocess.py",  # (59) four 2-process launches
    "test_reproducible.py",  # (49) a full-size SD1.5 built, then trained three times
    "test_queue_resume.py",  # (25) child processes killed and resumed
    "test_bench.py",  # (17)
    "test_cli.py",  # (13)
    "test_wizard_guide.py",  # (13)
    "test_wizard_terminal.py",  # (13) a real terminal (pexpect)
    "test_wizard_flow.py",  # (12)
    "test_train_demo.py",  # (11)
    "test_option_effects.py",  # (11)
    "test_queue.py",  # (10)
    "test_report.py",  # (8)
    "test_model_loading.py",  # (8)
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
