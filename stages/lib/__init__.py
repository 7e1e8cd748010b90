"""Shared pieces of the stages: configuration, paths, IDX files, MLflow tracking."""
