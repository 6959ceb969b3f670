"""td_result_export: exports a Treasure Data job's result into a table of another TD account,
exactly once and atomically.

The wheel carries the ``td-result-export`` executable; this package finds it and runs it:

- :func:`run` runs one export from a task spec (a dict with the keys of the YAML task spec) and
  returns its status document;
- :mod:`td_result_export.digdag` is the ``py>`` entry point for Digdag and TD Workflow
  (``py>: td_result_export.digdag.export``).
"""

from ._runner import ExportError, TransientExportError, binary, run, spec_keys

__all__ = ["ExportError", "TransientExportError", "binary", "run", "spec_keys"]
