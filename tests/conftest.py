"""Fixtures only (helpers live in tests/helpers.py): the tiny offline models and world,
built once per session, and the two models loaded once through `lgip.models.load_model`."""
import pytest

from tests.helpers import build_tiny_models, build_tiny_world


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
