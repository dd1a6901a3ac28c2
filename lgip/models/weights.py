"""Where a model's weights come from on this machine, found from its spec, and their state
on disk (each file's size and modification time, the Hugging Face cache's revision
pointer), so that a later run can tell, without loading anything, that the weights are
the ones an earlier run loaded.

`weight_sources(spec)` runs beside a model load (it may import open_clip or
huggingface_hub); `weights_state(sources)` is standard library only and is what a warm
run calls.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from lgip.models.spec import ModelSpec

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"


def _hub_sources(repo_id: str) -> Optional[Dict[str, List[str]]]:
    """The cached snapshot folder of a Hugging Face repo at the revision `main` points
    to, and that pointer's file; None where the repo is not in the local cache."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        return None
    try:
        snapshot = snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError is an OSError), or a malformed id
        return None
    repo_folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
    return {"folders": [os.path.abspath(snapshot)], "files": [],
            "refs": [os.path.join(repo_folder, "refs", "main")]}


def _openclip_pretrained_repo(name: str, tag: str) -> Optional[str]:
    """The Hugging Face repo open_clip fetches the pretrained tag `tag` of `name` from."""
    try:
        import open_clip
    except ImportError:
        return None
    hub = (open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub", "")
    repo = hub.strip("/")
    return "/".join(repo.split("/")[:2]) if repo.count("/") >= 1 else None


def weight_sources(spec: ModelSpec) -> Optional[Dict[str, List[str]]]:
    """{"folders", "files", "refs"}: the folders whose every file, the single files, and
    the hub revision pointers that `spec`'s weights (and configs) are read from here;
    None where they cannot be named (random weights, a URL outside the Hugging Face
    cache, a hub model not downloaded yet), and a warm run then loads the model."""
    local: Dict[str, List[str]] = {"folders": [], "files": [], "refs": []}
    if spec.backend == "openclip" and spec.random_weights:
        return None  # open_clip draws random weights: no two loads agree
    if spec.backend == "hf":
        if os.path.isdir(spec.name):
            return {**local, "folders": [os.path.abspath(spec.name)]}
        return _hub_sources(spec.name)
    if spec.name.startswith(LOCAL_DIR):
        return {**local, "folders": [os.path.abspath(spec.name[len(LOCAL_DIR):])]}
    if spec.name.startswith(HF_HUB):
        return _hub_sources(spec.name[len(HF_HUB):])
    if os.path.isfile(spec.pretrained):
        return {**local, "files": [os.path.abspath(spec.pretrained)]}
    repo = _openclip_pretrained_repo(spec.name, spec.pretrained)
    return _hub_sources(repo) if repo else None


def _file_state(path: str) -> List[Any]:
    """[size, mtime_ns] of the file (through symlinks, as the hub cache has them), or
    [None, None] where it is not there."""
    try:
        stat = os.stat(path)
    except OSError:
        return [None, None]
    return [stat.st_size, stat.st_mtime_ns]


def weights_state(sources: Dict[str, List[str]]) -> Dict[str, Any]:
    """What `sources` hold now: every file's size and modification time (each folder's
    files found by walking it) and each revision pointer's content."""
    files = {path: _file_state(path) for path in sources["files"]}
    for folder in sources["folders"]:
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            for name in sorted(names):
                if not name.startswith("."):
                    path = os.path.join(root, name)
                    files[path] = _file_state(path)
    refs = {}
    for path in sources["refs"]:
        try:
            with open(path, encoding="utf-8") as handle:
                refs[path] = handle.read().strip()
        except OSError:
            refs[path] = None
    return {"files": files, "refs": refs}
