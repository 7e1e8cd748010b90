"""MNIST on disk: download from mirrors with pinned digests (mirrors.py, fetch.py, digests.py),
strict IDX parsing (idx.py), the prepared train/validation/test splits (prepared.py), user digit
images for `mlpstudy predict` (digit_files.py) and the dataset's figures (dataset_figures.py).

May import: core.
"""
