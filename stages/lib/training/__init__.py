"""One cell's training: device and determinism (device.py), the model (model.py), batches
(batches.py), the fit with its callbacks, early stopping, checkpoints and resume (fitting.py,
callbacks.py, resume.py), diagnostics (diagnostics*.py, train_diagnostics.py), the cell's MLflow run
(cell_run.py), outputs (train_outputs.py), progress lines (progress.py), and the warm training
process with its thin client and what they agree on (train_service.py, train_client.py,
service_protocol.py, preflight.py).

May import: core, data, tracking.
"""
