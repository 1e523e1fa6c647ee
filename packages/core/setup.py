"""Build of the core: the version and the extras' pins, and two Cython extensions, the codec
and the copy kernel of ``tensorwire.transport.kit.copying``.

The version is the repository's ``VERSION`` file (``VERSION`` here links to it; an sdist
carries a copy), and every extra pins its distribution to exactly that version.

The extensions are compiled when a C compiler works, stripped of debug information. Without
one (or with ``TENSORWIRE_PURE_BUILD=1``) the build still succeeds, with one warning line,
and the pure-Python twin of the codec serves (``tensorwire info`` then says ``codec:
python`` and why), large copies are NumPy's. The reason is recorded in ``<module>.missing``
(``tensorwire/codec/_codec_c.missing``) beside where each extension would be.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()

#: extra -> the distribution it installs, at this very version.
PLUGINS = {
    "grpc": "tensorwire-grpc",
    "rdma": "tensorwire-rdma",
    "data": "tensorwire-dataservice",
    "testing": "tensorwire-testing",
}
extras_require = {extra: [f"{dist}=={VERSION}"] for extra, dist in PLUGINS.items()}
extras_require["all"] = [f"{dist}=={VERSION}" for dist in PLUGINS.values()]

#: module -> (source, what it is, what serves without it).
EXTENSIONS = {
    "tensorwire.codec._codec_c": (
        "src/tensorwire/codec/_codec_c.pyx",
        "codec",
        "the pure-Python codec",
    ),
    "tensorwire.transport.kit._copy_c": (
        "src/tensorwire/transport/kit/_copy_c.pyx",
        "copy kernel",
        "NumPy's copy",
    ),
}


def warn(message):
    print(f"WARNING: tensorwire: {message}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python twins when compiling fails, with one
    warning line for all the extensions it could not build."""

    def run(self):
        self._failed = []
        try:
            super().run()
        except PlatformError as exc:  # no compiler at all for this platform
            for ext in self.extensions:
                self._fall_back(ext, f"no C compiler ({exc})")
        if self._failed:
            reason = self._failed[0][1]  # the same compiler failed each time
            names = " and ".join(EXTENSIONS[ext.name][1] for ext, _ in self._failed)
            serving = " and ".join(EXTENSIONS[ext.name][2] for ext, _ in self._failed)
            warn(f"compiled {names} not built, {serving} will serve: {reason}")

    def build_extension(self, ext):
        record = self._record(ext)
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as exc:
            # The compiler's own complaint is in the output above; one line says what it means.
            compiler = getattr(self.compiler, "compiler_so", None) or ["?"]
            self._fall_back(ext, f"the C compiler {compiler[0]!r} failed ({type(exc).__name__})")
        else:
            if os.path.exists(record):
                os.remove(record)

    def _record(self, ext):
        """Written where the extension would be when it is not built (read back at import by
        ``tensorwire._compiled``, for ``tensorwire info``)."""
        folder = os.path.dirname(self.get_ext_fullpath(ext.name))
        return os.path.join(folder, ext.name.rpartition(".")[2] + ".missing")

    def _fall_back(self, ext, reason):
        record = self._record(ext)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(record, "w", encoding="utf-8") as f:
            f.write(f"built without the compiled {EXTENSIONS[ext.name][1]}: {reason}\n")
        self._failed.append((ext, reason))


ext_modules = []
cmdclass = {}
if os.environ.get("TENSORWIRE_PURE_BUILD"):
    warn("TENSORWIRE_PURE_BUILD is set: the codec runs as pure Python, large copies are NumPy's")
else:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    unix = sys.platform != "win32"
    ext_modules = cythonize(
        [
            Extension(
                name,
                [source],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                # No debug information (Python's own CFLAGS carry -g); the linker strips the
                # symbol table too, leaving the dynamic symbols an extension needs.
                extra_compile_args=["-g0"] if unix else [],
                extra_link_args=["-s"] if sys.platform.startswith("linux") else [],
            )
            for name, (source, _, _) in EXTENSIONS.items()
        ],
        compiler_directives={"language_level": "3"},
    )
    cmdclass["build_ext"] = OptionalBuildExt

setup(extras_require=extras_require, ext_modules=ext_modules, cmdclass=cmdclass)
