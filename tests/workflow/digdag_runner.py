"""A stand-in for Digdag's py> runner, for the tests: it runs a task's function the way Digdag's
own runner (digdag-standards' py/runner.py) does, without a Digdag server.

    python digdag_runner.py MODULE.FUNCTION IN_FILE OUT_FILE

IN_FILE is JSON ``{"params": {...}}`` (the task's params, already interpolated; ``_env`` becomes
environment variables, as Digdag sets them). A module named
``digdag`` is put in ``sys.modules`` with ``env.params``, ``env.store``, ``env.export`` and
``env.set_state``; the function is imported by its dotted name and called with the params it names
(all of them when it takes ``**kwargs``); what it stored is written to OUT_FILE as
``{"subtask_config", "export_params", "store_params"}``. An exception propagates: the process exits
non-zero with the traceback on stderr, and Digdag marks the task failed (its ``_retry`` may run it
again).
"""

import importlib
import inspect
import json
import os
import sys
import types


class Env(object):
    def __init__(self, params):
        self.params = params
        self.subtask_config = {}
        self.export_params = {}
        self.store_params = {}
        self.state_params = {}

    def store(self, params=None, **kwds):
        self.store_params.update(params or {})
        self.store_params.update(kwds)

    def export(self, params=None, **kwds):
        self.export_params.update(params or {})
        self.export_params.update(kwds)

    def set_state(self, params=None, **kwds):
        self.state_params.update(params or {})
        self.state_params.update(kwds)


def arguments(function, params):
    """What Digdag passes: every param when the function takes **kwargs, else the ones it names
    (a named one without a default that is not a param is an error)."""
    spec = inspect.getfullargspec(function)
    if spec.varkw:
        return dict(params)
    args = {}
    required = len(spec.args) - len(spec.defaults or ())
    for index, name in enumerate(spec.args):
        if name in params:
            args[name] = params[name]
        elif index < required:
            raise TypeError("Method '%s' requires parameter '%s' but not set" % (function.__qualname__, name))
    return args


def main(command, in_file, out_file):
    with open(in_file) as f:
        params = json.load(f)["params"]
    # Digdag sets a task's `_env` as environment variables of the process it runs (and leaves a
    # `${secret:…}` inside an ordinary param as it is: only `_env` values get secrets).
    for name, value in (params.get("_env") or {}).items():
        os.environ[name] = str(value)
    env = Env(params)
    module = types.ModuleType("digdag")
    module.env = env
    sys.modules["digdag"] = module
    sys.path.append(os.path.abspath(os.getcwd()))
    module_name, _, function_name = command.rpartition(".")
    function = getattr(importlib.import_module(module_name), function_name)
    function(**arguments(function, params))
    with open(out_file, "w") as f:
        json.dump(
            {"subtask_config": env.subtask_config, "export_params": env.export_params, "store_params": env.store_params},
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
