"""``make benchmark``: every model's run launched (jobs/), the runs' rows reported (report/), and the side
experiments (experiments/); the seed unit its times are stated in (seed_unit, seed_pipeline)."""
