"""Scripts run as `python SCRIPT ARGS...` runs them, started from a process that has
already imported torch, torchvision, open_clip and transformers (seconds of every fresh
interpreter), so the suite spends its time on the scripts, not on their imports.

`python -m tests.zygote` imports PRELOAD, then reads one JSON request a line on stdin:
{"script", "argv", "env", "stdout", "stderr"}. For each it forks a child that takes the
request's environment, argv, working folder and output files, runs the script as
`__main__` (runpy), runs the exit handlers and leaves with the code the interpreter would
give (SystemExit's code; 1 and a traceback on an uncaught exception). The zygote answers
with one line: the child's return code as subprocess reports it (-N: killed by signal N).
The zygote runs no torch op, so no thread pool exists when it forks.

What this cannot stand in for: anything decided at interpreter start (PYTHONHASHSEED, -X
options, PYTHON* variables) and what a fresh interpreter imports. Tests that check those
run a real `python` (tests.helpers.run_script does whenever it is given env_extra).
"""
from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import traceback

# Heavy third-party modules the scripts import; the repository's own modules are left to
# each run, so a run always executes the code on disk.
PRELOAD = ["numpy", "PIL.Image", "torch", "torchvision", "open_clip", "transformers", "matplotlib.pyplot",
           "lemminflect", "inflect", "tqdm"]


def run_child(request: dict, stdout) -> None:
    """In the forked child: become `python script argv...` and never return. `stdout` is
    the interpreter's own stream on file descriptor 1."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(0, encoding=sys.stdin.encoding, closefd=False)  # nothing read ahead from the zygote's pipe
        sys.stdout = stdout
        script = request["script"]
        sys.argv = [script, *request["argv"]]
        sys.path[0] = os.path.dirname(script)
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


def main() -> None:
    for name in PRELOAD:
        __import__(name)
    answers = sys.stdout
    sys.stdout = sys.stderr  # what the children print never reaches the answer pipe
    while True:
        line = sys.stdin.readline()
        if not line:  # the test process is gone
            return
        request = json.loads(line)
        child = os.fork()
        if child == 0:
            run_child(request, answers)
        _, status = os.waitpid(child, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        answers.write(f"{returncode}\n")
        answers.flush()


if __name__ == "__main__":
    main()
