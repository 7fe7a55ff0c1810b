"""The benchmark suite: the seed article's hyperparameter tables measured on real data."""
