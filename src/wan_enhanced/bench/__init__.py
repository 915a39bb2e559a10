"""Benchmark suite (``benchmark/run.py`` / ``wan-enhanced bench``) and cross-GPU comparison
(``wan-enhanced compare``): suite config, subprocess runner with resume, Markdown reports with
charts, GPU-catalog costs and projections onto GPUs that were not measured.

Entry points: :func:`wan_enhanced.bench.runner.bench_main` and
:func:`wan_enhanced.bench.compare.compare_main`.
"""
