"""Benchmarks: standalone modules run with `uv run python -m bench.<name>`; they print figures."""
