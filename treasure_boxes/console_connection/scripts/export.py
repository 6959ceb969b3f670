"""The py> task: installs td-result-export into TD Workflow's Python container when it is not there
yet, then runs one export with the task's params (td_result_export.digdag.export)."""
import importlib.util
import subprocess
import sys

PACKAGE = "td-result-export==0.1.0"  # a package name, or the URL of the wheel


def run(**params):
    if importlib.util.find_spec("td_result_export") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", PACKAGE])
    from td_result_export.digdag import export
    return export(**params)
