"""Benchmark peers: drivers that run other implementations of the same job under our timers.

``official_wan`` imports the official Wan2.2 code (PyPI ``wan22``, import name ``wan``) and times its
TI2V-5B path stage by stage; ``flash_attn_adapter`` is OUR stand-in for the ``flash_attn`` package that
code imports (torch SDPA pinned to one backend underneath, not FlashAttention's own build).
"""
