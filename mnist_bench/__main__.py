"""`python -m mnist_bench`: the same entry point as the `mnist-bench` command."""

from mnist_bench.cli import main

if __name__ == "__main__":
    main()
