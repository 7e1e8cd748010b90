"""What a training cell checks before anything heavy starts: its data is there, its folders
can be written. The `mlpstudy train` client runs the same checks before it hands the cell to a
training process, so bad input fails in a fraction of a second with the stage's own message."""

from __future__ import annotations

from stages.lib.core.atomic import check_writable
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.data.prepared import require_split

SPLITS = ("train", "validation")  # what training reads; never the test split


def check(cell: Cell, paths: Paths) -> None:
    """Raise ConfigError naming the missing split or the unwritable folder."""
    for name in SPLITS:
        require_split(paths, name)
    then = f"run `dvc repro train@{cell.key}` again"
    for folder in (paths.model_dir(cell.key), paths.train_reports(cell.key), paths.checkpoints):
        check_writable(folder, paths.root, then)
