"""Benchmark peers: drivers that run other implementations of the same job under our timers.

``official_wan`` imports the official Wan2.2 code (PyPI ``wan22``, import name ``wan``) and times its
TI2V-5B path stage by stage (``run_official``), built from ``official_import`` (stubs, ``import wan``, the
CPU-only shims), ``official_timing`` (stage clock, step timer, the patches and hooks that place them) and
``official_tiny`` (tiny-preset architecture overrides); ``flash_attn_adapter`` is OUR stand-in for the ``flash_attn`` package that
code imports (torch SDPA pinned to one backend underneath, not FlashAttention's own build).
"""
