"""Wan2.2-Enhanced: TI2V-5B video generation on diffusers, measured stage by stage."""

__version__ = "0.1.0"
