"""The py> task: installs td-result-export into TD Workflow's Python container when it is not there
yet, then runs one export with the task's params (td_result_export.digdag.export).

Where the package comes from, first match wins:
  1. the task param (or ``_export`` value) ``td_result_export_package``: a package name such as
     ``td-result-export==0.1.0``, the URL of a wheel, or the path of a wheel inside the project;
  2. a wheel in the project's ``wheels/`` folder (``wheels/td_result_export-*.whl``), installed
     with no network at all — put it there with ``bash operator/build-wheel`` and a copy of
     ``target/wheels/td_result_export-*.whl`` (about 8.5 MB; a TD Workflow project archive may
     hold 10 MB);
  3. ``PACKAGE`` from the package index.
"""
import glob
import importlib.util
import os
import subprocess
import sys

PACKAGE = "td-result-export==0.1.0"  # the release this box was written for
PACKAGE_PARAM = "td_result_export_package"


def install(params):
    """Installs the package unless it is importable already."""
    if importlib.util.find_spec("td_result_export") is not None:
        return
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    chosen = params.get(PACKAGE_PARAM)
    wheels = sorted(glob.glob(os.path.join("wheels", "td_result_export-*.whl")))
    if chosen:
        subprocess.check_call(pip + [chosen])
    elif wheels:
        subprocess.check_call(pip + ["--no-index", wheels[-1]])
    else:
        subprocess.check_call(pip + [PACKAGE])
    importlib.invalidate_caches()


def run(**params):
    install(params)
    params.pop(PACKAGE_PARAM, None)
    from td_result_export.digdag import export
    return export(**params)
