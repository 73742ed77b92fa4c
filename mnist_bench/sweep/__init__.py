"""`mnist-bench sweep`: Optuna studies whose trials are ordinary `fit` runs."""
