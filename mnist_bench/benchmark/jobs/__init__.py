"""Launching runs: the plan and its reuse ledger (plan), each model's recipe on a dataset (recipes), one
process per run with its placement (runner), and the expected time before the wait (estimate). The benchmark
and sweeps both launch through here."""
