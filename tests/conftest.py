"""Shared test helpers: the repository path and a way to run a script as a user does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def run_script(script, *args, env_extra=None, check=False):
    """Run `python REPO/script args...` and return the CompletedProcess (text mode)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    result = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=str(REPO))
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def run():
    return run_script


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny offline world built once per test session: an open_clip model saved as a
    `local-dir:` folder, a SigLIP saved with save_pretrained, 16 drawn images, a base
    JSONL and the three generators' outputs for it."""
    from types import SimpleNamespace

    from tests.tiny_models import CAPTIONS, build_tiny_openclip, build_tiny_siglip, draw_images, write_records

    root = tmp_path_factory.mktemp("tiny_world")
    world = SimpleNamespace(root=root)
    world.openclip = build_tiny_openclip(root / "openclip")
    world.siglip = build_tiny_siglip(root / "siglip", CAPTIONS)
    world.images = draw_images(root / "data" / "images", 16)
    world.base = Path(write_records(root / "data" / "base.jsonl", world.images))
    for script, name in [("diff_gen_caption.py", "perturb"), ("make_perturb_with_fliptypes.py", "fliptypes"),
                         ("rebuttal_enhanced_perturb_with_fliptypes.py", "enhanced")]:
        output = root / "data" / f"base_{name}.jsonl"
        run_script(script, "--input", world.base, "--output", output, check=True)
        setattr(world, name, output)
    return world
