"""Fixtures (helpers live in tests/helpers.py): the tiny offline models and world,
built once per session (per xdist worker), the two models loaded once through
`lgip.models.load_model`; and how many xdist workers to start."""
import os

import pytest

from tests.helpers import build_tiny_models, build_tiny_world


# Each pytest-xdist worker builds the tiny world again (seconds, a few hundred MB), so a
# many-core machine gets a few workers, not one per core.
MAX_TEST_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pytest.ini): one worker per core this process may use, at most MAX_TEST_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_TEST_WORKERS))


# Modules that take a minute or more of one worker, run first so that the other workers
# share the rest instead of one of them ending the suite alone (--dist loadscope hands
# out modules in collection order).
LONGEST_MODULES = ["tests/scripts/test_distributed.py", "tests/scripts/test_evaluation_scripts.py"]


def pytest_collection_modifyitems(config, items):
    """The LONGEST_MODULES' tests first, everything else in its order."""
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONGEST_MODULES.index(path) if path in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)  # stable: each module's tests keep their order


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny open_clip and SigLIP folders (`openclip`, `siglip`: their specs) and 16 drawn images."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(scope="session")
def tiny(tiny_models):
    """`tiny_models` plus a base JSONL and the three generators' outputs for it."""
    return build_tiny_world(tiny_models)


@pytest.fixture(scope="session")
def openclip_model(tiny_models):
    """The tiny open_clip model, loaded once (fp32, CPU). Tests must not change it."""
    from lgip.models import load_model

    return load_model(tiny_models.openclip, "cpu", "fp32")


@pytest.fixture(scope="session")
def siglip_model(tiny_models):
    """The tiny SigLIP, loaded once (fp32, CPU, max_length padding). Tests must not change it."""
    from lgip.models import load_model

    return load_model(tiny_models.siglip, "cpu", "fp32", siglip_padding="max_length")


@pytest.fixture(scope="session")
def default_multi_run(tiny, tmp_path_factory):
    """`default_multi_run(spec)` -> (metrics, CompletedProcess) of run_lgip_multi.py on the
    tiny world's perturbed file with the default flags of helpers.run_multi, run once per
    model for the whole session. Tests read the result; they must not change it."""
    from tests.helpers import run_multi

    runs = {}

    def run(spec):
        if spec not in runs:
            runs[spec] = run_multi(tiny, spec, tmp_path_factory.mktemp("default_multi_run"))
        return runs[spec]

    return run
