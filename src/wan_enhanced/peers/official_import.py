"""Importing the official Wan2.2 code (PyPI ``wan22`` 2.2.11, import name ``wan``) for :mod:`.official_wan`.

``wan/__init__.py`` imports every pipeline. :data:`STUBBED_MODULES` are replaced by placeholder modules
before ``import wan`` (they are not on the TI2V path and pull in packages the benchmark machine lacks);
:data:`STUBBED_IF_MISSING` are stubbed only when the real package cannot be imported. ``flash_attn`` is our
adapter (:mod:`.flash_attn_adapter`), never FlashAttention's own build.

CPU (tests only): the official code hardcodes CUDA. With ``device="cpu"`` the driver applies the shims in
:data:`CPU_SHIMS` and nothing else; none of them is applied on CUDA. Two of them live here: the import-time
``torch.cuda.current_device`` answer (:func:`import_wan` with ``cpu``) and :func:`cpu_flash_attention`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import flash_attn_adapter

#: modules replaced by placeholders before ``import wan``, always: name → why
STUBBED_MODULES: dict[str, str] = {
    "wan.animate": "Wan-Animate-14B pipeline (imported by wan/__init__.py); needs cv2, decord, peft; "
                   "not on the TI2V path; placeholder WanAnimate raises if used",
    "wan.speech2video": "Wan-S2V-14B pipeline (imported by wan/__init__.py); needs decord, librosa (audio "
                        "encoder); not on the TI2V path; placeholder WanS2V raises if used",
}
#: modules replaced by placeholders only when the real package cannot be imported: name → why
STUBBED_IF_MISSING: dict[str, str] = {
    "torchvision": "imported at module level by wan/textimage2video.py (TF, used only by i2v) and "
                   "wan/utils/utils.py (make_grid, used only by save_video); the t2v path calls neither; "
                   "when stubbed, Save_Video is skipped",
}
_TORCHVISION_SUBMODULES = ("torchvision.transforms", "torchvision.transforms.functional", "torchvision.utils")
#: what the driver changes when it runs the official code on the CPU (tests only), name → what
CPU_SHIMS: dict[str, str] = {
    "torch.cuda.current_device": "returns 0 during `import wan` (wan/modules/t5.py evaluates it as a default "
                                 "argument at import time)",
    "Wan2_2_VAE(device=...)": "the VAE is built on the CPU instead of cuda:{device_id}",
    "WanTI2V.device": "set to cpu after construction (noise generator, timesteps, moves)",
    "offload_model / convert_model_dtype": "forced off (offload calls torch.cuda.synchronize(); a bf16 DiT "
                                           "needs CUDA autocast to take the fp32 latents)",
    "config.t5_dtype": "float32 instead of bfloat16: without CUDA autocast the bf16 text context cannot meet "
                       "the fp32 DiT",
    "wan.modules.model.flash_attention": "the official attention function, re-executed from the installed "
                                         "wan/modules/attention.py with asserts stripped (python -O), so its "
                                         "`q.device.type == 'cuda'` assert does not stop a CPU run",
}


class _Placeholder:
    """Stands in for a pipeline class of a stubbed module; using it is an error."""

    _module = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{type(self).__name__} comes from the stubbed module {self._module!r} "
                           f"(wan_enhanced.peers.official_import stubs it; only the TI2V path is available)")


def _stub_module(name: str, attrs: dict[str, Any] | None = None, package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, f"wan_enhanced placeholder for {name} (not the real module)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []
    mod.__wan_enhanced_stub__ = True
    for key, value in (attrs or {}).items():
        setattr(mod, key, value)
    return mod


def _placeholder_class(cls_name: str, module: str) -> type:
    return type(cls_name, (_Placeholder,), {"_module": module, "__module__": module})


def _torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision.transforms.functional")
        importlib.import_module("torchvision.utils")
    except Exception:  # noqa: BLE001 - missing, or a build that does not match torch
        return False
    return True


def install_stubs() -> list[str]:
    """Insert the placeholder modules into ``sys.modules`` (before ``import wan``); returns their names.

    diffusers and transformers are imported first, so their package-availability probes see the real
    environment, not the placeholders.
    """
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    applied: list[str] = []
    for name, cls_name in (("wan.animate", "WanAnimate"), ("wan.speech2video", "WanS2V")):
        present = sys.modules.get(name)
        if present is None:
            sys.modules[name] = _stub_module(name, {cls_name: _placeholder_class(cls_name, name)})
        elif not getattr(present, "__wan_enhanced_stub__", False):
            continue  # the real module is already imported: nothing to stub
        applied.append(name)
    tv = sys.modules.get("torchvision")
    if tv is not None and getattr(tv, "__wan_enhanced_stub__", False):
        applied += ["torchvision", *_TORCHVISION_SUBMODULES]
    elif not _torchvision_importable():
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]  # a half-imported broken build
        functional = _stub_module("torchvision.transforms.functional")
        transforms = _stub_module("torchvision.transforms", {"functional": functional}, package=True)
        utils = _stub_module("torchvision.utils")
        root = _stub_module("torchvision", {"transforms": transforms, "utils": utils}, package=True)
        sys.modules.update({"torchvision": root, "torchvision.transforms": transforms,
                            "torchvision.transforms.functional": functional, "torchvision.utils": utils})
        applied += ["torchvision", *_TORCHVISION_SUBMODULES]
    return applied


def import_wan(attention: str = "flash", *, cpu: bool = False) -> tuple[types.ModuleType, list[str]]:
    """Install the flash_attn adapter (``attention`` backend) and the stubs, then ``import wan``.

    Returns the ``wan`` package and the stubbed module names. With ``cpu`` (a CPU-only torch), the
    import-time ``torch.cuda.current_device()`` of ``wan/modules/t5.py`` is answered with 0.
    """
    flash_attn_adapter.install(attention)
    stubs = install_stubs()
    if cpu and "wan.modules.t5" not in sys.modules and not torch.cuda.is_available():
        original = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
        try:
            wan = importlib.import_module("wan")
        finally:
            torch.cuda.current_device = original  # type: ignore[assignment]
    else:
        wan = importlib.import_module("wan")
    attn = sys.modules["wan.modules.attention"]
    if not attn.FLASH_ATTN_2_AVAILABLE or attn.FLASH_ATTN_3_AVAILABLE:
        raise RuntimeError("wan.modules.attention did not pick the flash_attn adapter's FA2 path "
                           f"(FA2={attn.FLASH_ATTN_2_AVAILABLE}, FA3={attn.FLASH_ATTN_3_AVAILABLE})")
    if getattr(attn.flash_attn, "__wan_enhanced_adapter__", False) is not True:
        raise RuntimeError("wan.modules.attention imported a flash_attn that is not the adapter")
    return wan, stubs


def cpu_flash_attention() -> Callable[..., Any]:
    """The installed ``wan/modules/attention.py`` executed again with asserts stripped (CPU tests only)."""
    path = Path(sys.modules["wan.modules.attention"].__file__ or "")
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec", optimize=1)
    mod = types.ModuleType("_wan_enhanced_cpu_attention")
    mod.__file__ = str(path)
    exec(code, mod.__dict__)  # noqa: S102 - the installed official file, nothing else
    return mod.flash_attention


__all__ = ["CPU_SHIMS", "STUBBED_IF_MISSING", "STUBBED_MODULES", "cpu_flash_attention", "import_wan",
           "install_stubs"]
