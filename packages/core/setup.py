"""Build of the core: the version and the extras' pins, and one Cython extension, the codec.

The version is the repository's ``VERSION`` file (``VERSION`` here links to it; an sdist
carries a copy), and every extra pins its distribution to exactly that version.

The codec is compiled when a C compiler works, stripped of debug information. Without one
(or with ``TENSORWIRE_PURE_BUILD=1``) the build still succeeds, with one warning line, and
the pure-Python twin of the codec serves: ``tensorwire info`` then says ``codec: python``
and why. The reason is recorded in ``tensorwire/codec/_codec_c.missing`` beside where the
extension would be.
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

#: Written where the extension would be when it is not built; read by tensorwire.codec.
MISSING_RECORD = "_codec_c.missing"


def warn(message):
    print(f"WARNING: tensorwire: {message}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python codec when compiling fails."""

    def run(self):
        try:
            super().run()
        except PlatformError as exc:  # no compiler at all for this platform
            self._fall_back(self.extensions[0], f"no C compiler ({exc})")

    def build_extension(self, ext):
        record = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), MISSING_RECORD)
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as exc:
            # The compiler's own complaint is in the output above; one line says what it means.
            compiler = getattr(self.compiler, "compiler_so", None) or ["?"]
            self._fall_back(ext, f"the C compiler {compiler[0]!r} failed ({type(exc).__name__})")
        else:
            if os.path.exists(record):
                os.remove(record)

    def _fall_back(self, ext, reason):
        record = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), MISSING_RECORD)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(record, "w", encoding="utf-8") as f:
            f.write(f"built without the compiled codec: {reason}\n")
        warn(f"compiled codec not built, the pure-Python codec will serve: {reason}")


ext_modules = []
cmdclass = {}
if os.environ.get("TENSORWIRE_PURE_BUILD"):
    warn("TENSORWIRE_PURE_BUILD is set: the codec runs as pure Python")
else:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    unix = sys.platform != "win32"
    ext_modules = cythonize(
        [
            Extension(
                "tensorwire.codec._codec_c",
                ["src/tensorwire/codec/_codec_c.pyx"],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                # No debug information (Python's own CFLAGS carry -g); the linker strips the
                # symbol table too, leaving the dynamic symbols an extension needs.
                extra_compile_args=["-g0"] if unix else [],
                extra_link_args=["-s"] if sys.platform.startswith("linux") else [],
            )
        ],
        compiler_directives={"language_level": "3"},
    )
    cmdclass["build_ext"] = OptionalBuildExt

setup(extras_require=extras_require, ext_modules=ext_modules, cmdclass=cmdclass)
