"""A compiler wrapper that caches the object files every Verilator build compiles alike.

Each simulator build compiles, besides the design's own C++, Verilator's run-time library
(``verilated.cpp``, ``verilated_vpi.cpp``, ``verilated_threads.cpp``, ``verilated_dpi.cpp``)
and cocotb's ``verilator.cpp`` from the same sources with the same flags, most of a small
block's build (``tests/test_bram.py`` and ``tests/test_kv_cache.py`` in one process from an
empty ``HDLGEN_SIM_BUILD``: 467 s with ``HDLGEN_OBJCACHE=0``, 261 s with the cache).
:func:`sim.harness.setup_verilator_env` names this wrapper as the ``OBJCACHE`` of Verilator's
``verilated.mk`` (the hook meant for ``ccache``, which pip cannot install), so make runs
``objcache <compiler> <flags> -c -o X.o src.cpp``.

A compile is cached when its source lies outside the build directory (the current directory:
the design's ``Vtop*.cpp`` files are always compiled). The key is the SHA-256 of the command
line (the output by its file name only), the compiler binary's size and time stamp, and the source
*preprocessed* with the same flags (``-E``), so any header, define or include path that
changes the code changes the key. A hit copies the object and its dependency file (``X.d``,
from ``-MMD``); a miss compiles and stores both (written to a temporary name, then renamed, so
concurrent builds never see half a file). Anything else (linking, the precompiled header, a
command line it does not understand) runs the compiler unchanged.

The cache is not pruned: it holds one set of run-time objects per set of flags and one of
cocotb's main per distinct top-level port list, small next to the builds; deleting it is safe.

Environment: ``HDLGEN_OBJCACHE_DIR`` is the cache directory (set by the harness); with
``HDLGEN_OBJCACHE_LOG`` set, each decision is appended to that file (``hit``/``miss``/``pass``
and the object name), which the tests read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

#: flags that only name or shape the dependency output, dropped from the ``-E`` run
_DEP_FLAGS = {"-MMD", "-MD", "-MP"}
_DEP_FLAGS_WITH_ARG = {"-MF", "-MT", "-MQ"}


def _parse(args: list[str]):
    """``(output, source)`` of a single ``-c`` compile of a C++ file, else ``None``."""
    if "-c" not in args or args.count("-o") != 1:
        return None
    i = args.index("-o")
    if i + 1 >= len(args):
        return None
    output = args[i + 1]
    sources = [a for a in args
               if a.endswith((".cpp", ".cc", ".cxx", ".c")) and not a.startswith("-")]
    if len(sources) != 1 or not output.endswith(".o"):
        return None
    return output, sources[0]


def _preprocess_args(cmd: list[str]) -> list[str]:
    """``cmd`` as a preprocessing run: without ``-c``, the output and the dependency flags."""
    out, skip = [], False
    for a in cmd:
        if skip:
            skip = False
        elif a == "-o" or a in _DEP_FLAGS_WITH_ARG:
            skip = True
        elif a != "-c" and a not in _DEP_FLAGS:
            out.append(a)
    return out + ["-E"]


def _key(cmd: list[str], output: str) -> str | None:
    compiler = shutil.which(cmd[0])
    if compiler is None:
        return None
    st = os.stat(compiler)
    pre = subprocess.run(_preprocess_args(cmd), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    if pre.returncode != 0:
        return None
    h = hashlib.sha256()
    for part in (os.path.realpath(compiler), str(st.st_size), str(st.st_mtime_ns),
                 *[os.path.basename(a) if a == output else a for a in cmd]):
        h.update(part.encode() + b"\0")
    h.update(pre.stdout)
    return h.hexdigest()[:32]


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _log(what: str, output: str) -> None:
    path = os.environ.get("HDLGEN_OBJCACHE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.path.basename(output)}\n")


def _store(src: str, dst: str) -> None:
    tmp = f"{dst}.{os.getpid()}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def main(cmd: list[str]) -> int:
    if not cmd:
        print("usage: objcache <compiler> <arguments>", file=sys.stderr)
        return 2
    cache = os.environ.get("HDLGEN_OBJCACHE_DIR")
    parsed = _parse(cmd[1:])
    if not cache or parsed is None or _inside(parsed[1], os.getcwd()):
        if parsed:
            _log("pass", parsed[0])
        return subprocess.call(cmd)
    output, _ = parsed
    key = _key(cmd, output)
    if key is None:
        _log("pass", output)
        return subprocess.call(cmd)
    depfile = os.path.splitext(output)[0] + ".d"
    entry = os.path.join(cache, key)
    if os.path.exists(entry + ".o"):
        try:
            _store(entry + ".o", output)
            if os.path.exists(entry + ".d"):
                _store(entry + ".d", depfile)
            _log("hit", output)
            return 0
        except OSError:
            pass                     # pruned under us: compile instead
    started = time.time() - 1           # (a dependency file older than this is stale)
    rc = subprocess.call(cmd)
    if rc == 0 and os.path.exists(output):
        os.makedirs(cache, exist_ok=True)
        if os.path.exists(depfile) and os.path.getmtime(depfile) >= started:
            _store(depfile, entry + ".d")
        _store(output, entry + ".o")     # the object last: its presence marks a whole entry
        _log("miss", output)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
