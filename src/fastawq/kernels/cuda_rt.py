"""Compiling and launching CUDA C++ kernels at run time: NVRTC and the driver API through ctypes.

No CUDA toolkit and no build step: NVRTC ships with PyTorch's CUDA wheels (``libnvrtc``) and the driver
(``libcuda``) with the GPU driver. A source is compiled once per (source, device) to a cubin for the
device's own architecture and kept for the process; the cubin is also kept on disk
(``<cache>/cubin``, keyed by source, architecture and NVRTC version; ``FASTAWQ_CUBIN_CACHE=0`` turns
that off), so a later process skips NVRTC. Nothing here runs at import; callers check
:func:`why_unavailable` first, so a machine without NVRTC falls back to the Triton kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import glob
import hashlib
import os
import struct
import sys
import threading
from dataclasses import dataclass

import torch

_c = ctypes


@functools.cache
def _nvrtc() -> ctypes.CDLL | None:
    """libnvrtc: the one PyTorch loaded, else one from the ``nvidia`` wheels or the system."""
    try:
        from torch.cuda import _utils

        lib = _utils._get_nvrtc_library()  # type: ignore[attr-defined]
        if lib is not None:
            return lib  # type: ignore[no-any-return]
    except Exception:  # a torch without that helper: look ourselves
        pass
    names: list[str] = []
    for base in sys.path:
        names += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")), reverse=True)
    found = ctypes.util.find_library("nvrtc")
    if found:
        names.append(found)
    for name in names:
        if "builtins" in name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@functools.cache
def _driver() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def why_unavailable(device: torch.device) -> str | None:
    """Why CUDA C++ kernels cannot run on ``device`` (None: they can)."""
    if device.type != "cuda" or torch.version.cuda is None:
        return f"run-time CUDA kernels need a CUDA device, the input is on {device}"
    if _driver() is None:
        return "the CUDA driver library (libcuda.so.1) was not found"
    if _nvrtc() is None:
        return "NVRTC (libnvrtc, shipped with PyTorch's CUDA wheels) was not found"
    return None


class CudaError(RuntimeError):
    pass


def _check_drv(res: int, what: str) -> None:
    if res != 0:
        msg = _c.c_char_p()
        drv = _driver()
        if drv is not None:
            drv.cuGetErrorString(res, _c.byref(msg))
        raise CudaError(f"{what} failed: CUDA error {res} ({(msg.value or b'?').decode()})")


_NVRTC_OPTIONS = "--std=c++17 -default-device"


def compile_cubin(source: str, name: str, arch: str) -> bytes:
    """Compile ``source`` with NVRTC for ``sm_<arch>``; the log is in the error on failure."""
    lib = _nvrtc()
    if lib is None:
        raise CudaError("NVRTC is not available")
    prog = _c.c_void_p()
    res = lib.nvrtcCreateProgram(_c.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None)
    if res != 0:
        raise CudaError(f"nvrtcCreateProgram failed ({res})")
    try:
        opts = [f"--gpu-architecture=sm_{arch}".encode(), *(o.encode() for o in _NVRTC_OPTIONS.split())]
        arr = (_c.c_char_p * len(opts))(*opts)
        res = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if res != 0:
            size = _c.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, _c.byref(size))
            log = _c.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CudaError(f"NVRTC could not compile {name}:\n{log.value.decode(errors='replace')}")
        size = _c.c_size_t()
        if lib.nvrtcGetCUBINSize(prog, _c.byref(size)) != 0:
            raise CudaError("nvrtcGetCUBINSize failed")
        buf = _c.create_string_buffer(size.value)
        if lib.nvrtcGetCUBIN(prog, buf) != 0:
            raise CudaError("nvrtcGetCUBIN failed")
        return buf.raw
    finally:
        lib.nvrtcDestroyProgram(_c.byref(prog))


def _nvrtc_version() -> str:
    lib = _nvrtc()
    major, minor = _c.c_int(), _c.c_int()
    if lib is None or lib.nvrtcVersion(_c.byref(major), _c.byref(minor)) != 0:
        return "unknown"
    return f"{major.value}.{minor.value}"


def cubin_path(source: str, name: str, arch: str) -> str:
    """Where the disk cache keeps the cubin of ``source`` for ``sm_<arch>`` from this NVRTC."""
    from fastawq.assets import cache_dir

    key = "\0".join((source, name, arch, _nvrtc_version(), _NVRTC_OPTIONS))
    return str(cache_dir() / "cubin" / f"{name}-sm{arch}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.cubin")


def cached_cubin(source: str, name: str, arch: str) -> bytes:
    """:func:`compile_cubin` through the disk cache. A cache that cannot be read or written only costs the
    compile; a file that is not an ELF image (cut short, say) is compiled again and replaced."""
    if os.environ.get("FASTAWQ_CUBIN_CACHE", "1") == "0":
        return compile_cubin(source, name, arch)
    path = cubin_path(source, name, arch)
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(b"\x7fELF"):
            return data
    cubin = compile_cubin(source, name, arch)
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(cubin)
        os.replace(tmp, path)  # readers see the whole file or none
    return cubin


class TensorMap(_c.Structure):
    """A TMA tensor map (``CUtensorMap``): 128 opaque bytes, passed to a kernel by value."""

    _fields_ = (("words", _c.c_uint64 * 16),)


#: per signature letter: the struct code of the value, its size and its alignment in the argument buffer
_ARG_KINDS: dict[str, tuple[str, int, int]] = {
    "p": ("Q", 8, 8),
    "i": ("i", 4, 4),
    "l": ("q", 8, 8),
    "t": (f"{_c.sizeof(TensorMap)}s", _c.sizeof(TensorMap), 64),
}


class Args:
    """Reusable kernel arguments of a fixed signature (``"p"`` a pointer, ``"i"`` an int, ``"l"`` a 64-bit
    int, ``"t"`` a :class:`TensorMap`, given as its 128 bytes), laid out in one buffer: ``set`` packs all the
    values into it with one ``struct.pack_into`` (a few µs less per launch than a ctypes object per value)
    and ``params`` is the ``void**`` array of their addresses that the driver reads, so a launch builds no
    ctypes objects. Not shared between threads (see :meth:`Function.args`)."""

    def __init__(self, signature: str) -> None:
        fmt, offsets, end = "=", [], 0
        for ch in signature:
            code, size, align = _ARG_KINDS[ch]
            pad = -end % align
            fmt += f"{pad}x{code}" if pad else code
            offsets.append(end + pad)
            end += pad + size
        self._pack = struct.Struct(fmt)
        self._buf = _c.create_string_buffer(end + 64)  # room to start the layout on a 64-byte boundary
        self._base = -_c.addressof(self._buf) % 64
        self._maps = [i for i, ch in enumerate(signature) if ch == "t"]
        start = _c.addressof(self._buf) + self._base
        self.params = (_c.c_void_p * len(signature))(*[start + o for o in offsets])

    def set(self, *values: int | bytes) -> None:
        if len(values) != len(self.params):
            raise ValueError(f"{len(self.params)} kernel arguments expected, got {len(values)}")
        for i in self._maps:  # struct would pad or cut a map of the wrong size without a word
            v = values[i]
            if not isinstance(v, bytes) or len(v) != _c.sizeof(TensorMap):
                raise ValueError(f"argument {i} must be a tensor map's {_c.sizeof(TensorMap)} bytes")
        self._pack.pack_into(self._buf, self._base, *values)


@dataclass(eq=False)
class Function:
    """A loaded kernel: ``launch(grid, block, args, stream)`` with this thread's :class:`Args` for its
    signature (:meth:`args`), filled in place."""

    handle: _c.c_void_p
    module: _c.c_void_p
    num_regs: int
    name: str

    def __post_init__(self) -> None:
        self._local = threading.local()
        self.smem = 0  # the dynamic shared memory the function is allowed now

    def allow_smem(self, smem: int) -> None:
        """Let launches take up to ``smem`` bytes of dynamic shared memory (the attribute only grows: one
        cached function serves shapes that need different amounts)."""
        if smem > self.smem:
            drv = _driver()
            assert drv is not None
            # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (static shared memory comes on top)
            _check_drv(drv.cuFuncSetAttribute(self.handle, 8, smem), "cuFuncSetAttribute(dynamic shared memory)")
            self.smem = smem

    def args(self, signature: str) -> Args:
        """This thread's reusable arguments for ``signature``."""
        a: Args | None = getattr(self._local, signature, None)
        if a is None:
            a = Args(signature)
            setattr(self._local, signature, a)
        return a

    def launch(self, grid: tuple[int, int, int], block: int, args: Args, stream: int, smem: int = 0) -> None:
        gx, gy, gz = grid
        res = _launcher()(self.handle, gx, gy, gz, block, 1, 1, smem, stream, args.params, None)
        if res != 0:
            _check_drv(res, f"launching {self.name}")

    def launch_on(self, device: torch.device, grid: tuple[int, int, int], block: int, args: Args, smem: int) -> None:
        """:meth:`launch` on ``device``'s current stream, in that device's context when it is not the
        current one (a module on another GPU)."""
        stream = current_stream_handle(device)
        elsewhere = device.index is not None and device.index != torch.cuda.current_device()
        with torch.cuda.device(device) if elsewhere else contextlib.nullcontext():
            self.launch(grid, block, args, stream, smem)


class _LaunchConfig(_c.Structure):
    """CUlaunchConfig: grid, block, dynamic shared memory, stream, no launch attributes."""

    _fields_ = (("grid_x", _c.c_uint), ("grid_y", _c.c_uint), ("grid_z", _c.c_uint), ("block_x", _c.c_uint),
                ("block_y", _c.c_uint), ("block_z", _c.c_uint), ("smem", _c.c_uint), ("stream", _c.c_void_p),
                ("attrs", _c.c_void_p), ("num_attrs", _c.c_uint))  # fmt: skip


def max_active_clusters(fn: Function, grid: tuple[int, int, int], block: int, smem: int) -> int | None:
    """How many thread-block clusters of ``fn`` (compiled with its cluster size) fit on the GPU at once, with
    ``block`` threads and ``smem`` bytes of dynamic shared memory a CTA; None where the driver cannot say.
    Clusters are placed within a GPC, so this can be less than the SMs divided by the cluster size."""
    drv = _driver()
    fun = getattr(drv, "cuOccupancyMaxActiveClusters", None)
    if fun is None:
        return None
    cfg = _LaunchConfig(grid[0], grid[1], grid[2], block, 1, 1, smem, None, None, 0)
    count = _c.c_int()
    if fun(_c.byref(count), fn.handle, _c.byref(cfg)) != 0:
        return None
    return int(count.value)


def device_index(device: torch.device) -> int:
    """The CUDA device index of ``device`` (the current device for a bare ``cuda``)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def current_stream_handle(device: torch.device) -> int:
    """The raw handle of ``device``'s current CUDA stream. torch's C accessor (what Triton's launcher
    calls) costs well under a microsecond; ``torch.cuda.current_stream(device)`` builds a Stream object
    each call, a few microseconds of host time that batch-1 decode pays per layer."""
    index = device_index(device)
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return int(raw(index))
    return int(torch.cuda.current_stream(index).cuda_stream)  # a torch without the accessor


def rows_16b(t: torch.Tensor) -> torch.Tensor:
    """``t`` (2-D, 16-bit) itself when its rows are contiguous and start on 16-byte boundaries (16-byte copies
    and TMA read it in place), else a contiguous copy."""
    if t.stride(1) != 1 or t.stride(0) % 8 or t.data_ptr() % 16:
        return t.clone(memory_format=torch.contiguous_format)
    return t


@functools.cache
def _launcher() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    """cuLaunchKernel with its argument types declared (ctypes converts the Python ints directly)."""
    drv = _driver()
    assert drv is not None
    fn = drv.cuLaunchKernel
    u = _c.c_uint
    fn.argtypes = [_c.c_void_p, u, u, u, u, u, u, u, _c.c_void_p, _c.c_void_p, _c.c_void_p]
    fn.restype = _c.c_int
    return fn


#: CUtensorMapDataType of the dtypes read through TMA: the activations, and int32 packed weights / scales
_TMA_DTYPES = {torch.float16: 6, torch.bfloat16: 9, torch.int32: 3}
_TMA_SWIZZLE_NONE = 0
_TMA_SWIZZLE_128B = 3
_TMA_L2_256B = 3
_MAPS: dict[tuple[object, ...], bytes] = {}


def tensor_map_2d(t: torch.Tensor, box: tuple[int, int], swizzle: bool = True) -> bytes:
    """The TMA tensor map of a row-major 2-D fp16/bf16/int32 tensor read in boxes of ``box`` = (columns,
    rows) into shared memory, in the 128-byte swizzle (``columns`` × 2 = 128 bytes) or, without ``swizzle``,
    row after row as in memory; rows and columns past the tensor read as zeros. Kept per (address, shape,
    stride, box): a static buffer costs nothing after its first call."""
    rows, cols = t.shape
    key = (t.device.index, t.data_ptr(), t.dtype, rows, cols, t.stride(0), box, swizzle)
    hit = _MAPS.get(key)
    if hit is not None:
        return hit
    if t.stride(1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
        raise ValueError("a TMA tensor map needs contiguous rows that start on 16-byte boundaries")
    drv = _driver()
    assert drv is not None
    tmap = TensorMap()
    u64, u32 = _c.c_uint64, _c.c_uint32
    dims = (u64 * 2)(cols, rows)
    strides = (u64 * 1)(t.stride(0) * t.element_size())
    boxes = (u32 * 2)(*box)
    elem = (u32 * 2)(1, 1)
    res = drv.cuTensorMapEncodeTiled(_c.byref(tmap), _TMA_DTYPES[t.dtype], 2, _c.c_void_p(t.data_ptr()), dims, strides,
                                     boxes, elem, 0, _TMA_SWIZZLE_128B if swizzle else _TMA_SWIZZLE_NONE,
                                     _TMA_L2_256B, 0)  # fmt: skip
    _check_drv(res, "cuTensorMapEncodeTiled")
    raw = bytes(tmap)
    if len(_MAPS) > 4096:
        _MAPS.clear()
    _MAPS[key] = raw
    return raw


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str, int], Function] = {}


def load(source: str, name: str, device: torch.device, smem: int = 0) -> Function:
    """The kernel ``name`` of ``source`` compiled for and loaded on ``device`` (cached), allowed ``smem``
    bytes of dynamic shared memory (or more, if an earlier load asked for more)."""
    index = device_index(device)
    key = (source, name, index)
    fn = _LOADED.get(key)
    if fn is None:
        with _LOCK:
            fn = _LOADED.get(key)
            if fn is None:
                fn = _LOADED[key] = _load(source, name, index)
    if smem > fn.smem:
        with torch.cuda.device(index):
            fn.allow_smem(smem)
    return fn


def arch(index: int) -> str:
    """The NVRTC target of CUDA device ``index``: ``90a`` on sm_90 (Hopper's architecture-specific
    instructions, wgmma; the cubin is for that device only), else major and minor (``80``, ``89``…)."""
    major, minor = torch.cuda.get_device_capability(index)
    return f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")


def _load(source: str, name: str, index: int) -> Function:
    """Compile (through the disk cache) and load ``name`` of ``source`` on device ``index``."""
    cubin = cached_cubin(source, name, arch(index))
    drv = _driver()
    assert drv is not None
    with torch.cuda.device(index):
        torch.cuda.current_stream().synchronize()  # makes torch's primary context current on this thread
        mod = _c.c_void_p()
        _check_drv(drv.cuModuleLoadData(_c.byref(mod), cubin), "cuModuleLoadData")
        fun = _c.c_void_p()
        _check_drv(drv.cuModuleGetFunction(_c.byref(fun), mod, name.encode()), "cuModuleGetFunction")
        regs = _c.c_int()
        drv.cuFuncGetAttribute(_c.byref(regs), 4, fun)  # CU_FUNC_ATTRIBUTE_NUM_REGS
    return Function(fun, mod, regs.value, name)
