"""The bottom layer: what every stage needs and nothing else.

Owns `params.yaml` (validation into typed objects, the grid and its cells: config.py), one cell's
effective configuration (cell_config.py), every path of the project (paths.py), errors meant for
the user (errors.py), atomic writes (atomic.py) and phase timing (stopwatch.py).
May import: nothing.
"""
