"""Side experiments on this machine: the framework's overhead against a plain loop (overhead), torch.compile's
speed (compile_speed) and an A/B of two finished benchmarks (ab)."""
