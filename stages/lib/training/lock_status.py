"""Whether `dvc repro` will find a train cell changed, judged from dvc.lock without DVC.

DVC's own status takes the repository lock, which a running `dvc repro` holds. This compares
what DVC compares: the cell's dvc.lock entry against its command, dependencies (files by MD5, a
directory another stage writes by that stage's entry), params and outputs as they are now. Used
only to choose cells to train ahead (lookahead.py): a wrong answer costs time, never numbers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages.lib.core.config import AXES
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths


@dataclass(frozen=True)
class LockStatus:
    root: Path
    lock: dict[str, Any]  # dvc.lock's stages
    template: dict[str, Any]  # dvc.yaml's train stage
    params: Any  # params.yaml as it is now
    produced: dict[str, str | None] = field(default_factory=dict)  # out path -> its locked md5
    hashes: dict[str, str | None] = field(default_factory=dict)  # file -> md5, read once

    @classmethod
    def read(cls, paths: Paths) -> LockStatus:
        lock = _read_yaml(paths.root / "dvc.lock").get("stages", {})
        template = _read_yaml(paths.root / "dvc.yaml").get("stages", {}).get("train", {})
        produced = {
            o["path"]: o.get("md5") for stage in lock.values() for o in stage.get("outs", [])
        }
        return cls(paths.root, lock, template, _read_yaml(paths.params), produced)

    def changed(self, cell: Cell) -> bool:
        """Whether DVC will find `cell`'s stage changed (or never run)."""
        entry = self.lock.get(f"train@{cell.key}")
        if not entry or not self.template:
            return True
        values = {f"item.{axis}": str(getattr(cell, axis)) for axis in AXES} | {"key": cell.key}

        def render(text: Any) -> str:
            return re.sub(r"\$\{([^}]+)\}", lambda match: values.get(match[1], match[0]), str(text))

        template = self.template
        if entry.get("cmd") != render(template.get("cmd", "")):
            return True
        deps = {dep["path"]: dep for dep in entry.get("deps", [])}
        if sorted(deps) != sorted(render(path) for path in template.get("deps", [])):
            return True
        if any(self._dep_changed(path, dep) for path, dep in deps.items()):
            return True
        declared = entry.get("params", {}).get("params.yaml", {})
        if sorted(declared) != sorted(render(key) for key in template.get("params", [])):
            return True
        if any(_lookup(self.params, key) != value for key, value in declared.items()):
            return True
        return any(_out_changed(self.root / out["path"], out) for out in entry.get("outs", []))

    def _dep_changed(self, path: str, dep: dict[str, Any]) -> bool:
        if path in self.produced:  # a directory another stage writes (data/prepared)
            return self.produced[path] != dep.get("md5")
        if path not in self.hashes:  # every cell depends on the same code files
            self.hashes[path] = _md5(self.root / path)
        return self.hashes[path] != dep.get("md5")


def _out_changed(path: Path, out: dict[str, Any]) -> bool:
    if str(out.get("md5", "")).endswith(".dir"):
        return not path.is_dir()
    return _md5(path) != out.get("md5")


def _md5(path: Path) -> str | None:
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()
    except OSError:
        return None


_MISSING = object()
# libyaml's parser when PyYAML has it, 5x faster: dvc.lock is read at every stage of a grid.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _lookup(params: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(params, dict) or part not in params:
            return _MISSING
        params = params[part]
    return params


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=LOADER) or {}
    except (OSError, yaml.YAMLError):
        return {}
