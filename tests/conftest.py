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
