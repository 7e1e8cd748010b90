"""The code the stages share, grouped by domain; each subpackage says what it owns.

Imports go one way, down this list (tests/test_layout.py enforces it):

    stages/*.py (one module per DVC stage) and stages/cli.py
      training/  evaluation/  reporting/   (side by side: none imports another)
      data/  tracking/                     (side by side)
      core/

A module imports from its own subpackage and from the layers below it, never from above.
"""
