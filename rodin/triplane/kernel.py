"""The compiled tri-plane sampling kernel (triplane_kernel.cpp), built on first use.

`load_kernel()` compiles the C++ source with torch's extension mechanism into torch's extension
cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), loads it once per process
and returns the op namespace (``forward``, ``backward``). It returns None, warning once, when the
build fails (no compiler, say); the pure-PyTorch path is then used. ``RODIN_NO_KERNEL=1`` disables it.

    python -m rodin.triplane.kernel --build     # build now and say where (make setup runs this)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("triplane_kernel.cpp")
NAME = "rodin_triplane"

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ops": None, "error": None, "variant": None, "seconds": None}


def disabled() -> bool:
    return os.environ.get("RODIN_NO_KERNEL", "").strip().lower() not in ("", "0", "false", "no")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_variants() -> list[tuple[str, list[str], list[str]]]:
    """(name suffix, compiler flags, linker flags) to try in turn: the widest vector ISA this CPU has
    that stays portable across machines of its kind, then plain -O3 (SSE2 on x86_64, NEON on
    aarch64). The ISA is part of the name, so a shared cache never hands an AVX2 build to an older
    CPU. With an OpenMP build of torch, `at::parallel_for` is inlined OpenMP code: -fopenmp is needed
    or the kernel runs on one thread; the last variant drops it in case the compiler lacks it."""
    import torch

    base = ["-O3", "-fno-math-errno"]
    omp = ["-fopenmp"] if torch._C.has_openmp else []
    variants: list[tuple[str, list[str], list[str]]] = []
    if platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= _cpu_flags():
        variants.append(("avx2", [*base, *omp, "-mavx2", "-mfma"], omp))
    variants.append(("generic", [*base, *omp], omp))
    if omp:
        variants.append(("serial", base, []))
    return variants


def _ensure_ninja_on_path() -> None:
    # `.venv/bin/python` without an activated venv: ninja lives beside the interpreter.
    if shutil.which("ninja"):
        return
    candidates = [os.path.dirname(sys.executable)]
    try:
        import ninja  # type: ignore[import-not-found]

        candidates.insert(0, ninja.BIN_DIR)
    except Exception:  # noqa: BLE001 - optional
        pass
    os.environ["PATH"] = os.pathsep.join([*candidates, os.environ.get("PATH", "")])


def extension_name(variant: str) -> str:
    """One build per ISA variant and torch version, so venvs that share a cache do not fight."""
    import torch

    version = re.sub(r"[^0-9A-Za-z]+", "_", torch.__version__.split("+")[0])
    return f"{NAME}_{variant}_torch{version}"


def _build(verbose: bool = False) -> Any:
    import torch
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    errors: list[str] = []
    for suffix, flags, ldflags in build_variants():
        start = time.perf_counter()
        try:
            cpp_extension.load(
                name=extension_name(suffix),
                sources=[str(SOURCE)],
                extra_cflags=flags,
                extra_ldflags=ldflags,
                is_python_module=False,
                verbose=verbose,
            )
        except Exception as error:  # noqa: BLE001 - any build failure means "use the fallback"
            errors.append(f"{suffix}: {str(error).strip().splitlines()[-1] if str(error).strip() else error!r}")
            continue
        _state["variant"] = suffix
        _state["seconds"] = time.perf_counter() - start
        return torch.ops.rodin_triplane
    raise RuntimeError("; ".join(errors))


def load_kernel(verbose: bool = False) -> Any | None:
    """The kernel's ops (``forward``, ``backward``), or None when disabled or it cannot be built."""
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        if disabled():
            _state["error"] = "disabled by RODIN_NO_KERNEL"
        else:
            try:
                _state["ops"] = _build(verbose)
            except Exception as error:  # noqa: BLE001
                _state["error"] = str(error)
                warnings.warn(
                    f"rodin: the fast tri-plane kernel could not be built ({error}); "
                    "using the slower pure-PyTorch sampling path; "
                    "`python -m rodin.triplane.kernel --build --verbose` shows the compiler's output",
                    RuntimeWarning,
                    stacklevel=2,
                )
        _state["tried"] = True
        return _state["ops"]


def kernel_info() -> dict[str, Any]:
    """What happened when loading: variant, build/load seconds, error (after `load_kernel`)."""
    return {k: _state[k] for k in ("variant", "seconds", "error")} | {"available": _state["ops"] is not None}


_allocator: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Make glibc keep freed memory for reuse instead of handing every large tensor back to the OS.

    glibc serves allocations over 32 MB with a fresh mmap and unmaps them when freed, so every large
    tensor (262,144 points x 64 hidden units is 64 MB) is paid for again in page faults, about 0.4 ms
    per MB on these machines: as much time as the arithmetic of a small MLP. This turns mmap off
    (large blocks come from the heap) and stops trimming the heap, so freed blocks are reused at no
    cost. Process-wide and one-way: the process keeps its peak memory. Meant for compute commands
    (fitting, rendering, benchmarks), in the spirit of PyTorch's advice to preload jemalloc or
    tcmalloc on CPUs. Returns whether it was applied (only on Linux with glibc).
    """
    if "applied" in _allocator:
        return _allocator["applied"]
    applied = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_max = -1, -4
            applied = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
        except (OSError, AttributeError):
            applied = False
    _allocator["applied"] = applied
    return applied


def build_directory(variant: str) -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(extension_name(variant), verbose=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rodin.triplane.kernel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="store_true", help="build (or load) the kernel and say where")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 0
    if disabled():
        print("rodin: RODIN_NO_KERNEL is set; the kernel is disabled")
        return 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ops = load_kernel(verbose=args.verbose)
    if ops is None:
        print(f"rodin: tri-plane kernel NOT built: {_state['error']}", file=sys.stderr)
        print("rodin: sampling falls back to the pure-PyTorch path", file=sys.stderr)
        return 1
    variant = _state["variant"]
    print(f"rodin: tri-plane kernel ready ({variant}, {time.perf_counter() - start:.1f} s) "
          f"in {build_directory(variant)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
