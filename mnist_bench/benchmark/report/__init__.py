"""Reporting finished runs: the typed results row (row), rows over seeds (aggregate), intervals and paired
tests (stats, comparison) and the tables (table). The figures are in :mod:`mnist_bench.plots`."""
