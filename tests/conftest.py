"""Suite-wide setup: one JAX compilation cache shared by the xdist workers and the subprocesses
(notebooks, CLIs) of this test run, so a function compiled at the same shapes in two processes
compiles once. The cache lives in a fresh temporary folder removed at the end: every run starts
cold, as CI does, and nothing outside the run is read or kept."""

import os
import shutil
import tempfile

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_created = None


def pytest_configure(config):
    global _created
    if os.environ.get(_CACHE_ENV):  # an xdist worker (inherits the controller's) or the user's
        return
    _created = tempfile.mkdtemp(prefix="stemjax-test-jax-cache-")
    os.environ[_CACHE_ENV] = _created
    import jax  # imported here, after the variable is set, in case a plugin imported it earlier

    jax.config.update("jax_compilation_cache_dir", _created)


def pytest_unconfigure(config):
    if _created:
        shutil.rmtree(_created, ignore_errors=True)
