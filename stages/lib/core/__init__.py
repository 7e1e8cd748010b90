"""The bottom layer: what every stage needs and nothing else.

Owns `params.yaml`: validation into typed objects (config.py, named variants: variants.py), the
one-line messages for bad input (config_messages.py), Keras's defaults of omitted settings
(keras_defaults.py); the grid's cells (grid.py); one cell's effective configuration
(cell_config.py); every path of the project (paths.py); errors meant for the user (errors.py);
atomic writes (atomic.py), phase timing and durations as progress lines print them (stopwatch.py).

May import: nothing.
"""
