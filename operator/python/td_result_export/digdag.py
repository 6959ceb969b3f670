"""The ``py>`` entry point for Digdag and hosted TD Workflow::

    +export:
      py>: td_result_export.digdag.export
      job_id: ${td.last_job_id}
      result_connection: other_account
      result_settings: {user_database_name: testdb, user_table_name: output_table, mode: append}
      _env:
        TD_API_KEY: ${secret:td.apikey}

Digdag's py> runner calls :func:`export` with every param of the task (Digdag has already
replaced ``${…}`` and ``${secret:…}`` in them). The task spec is made of the params that are task
spec keys (``job_id``, ``query``, ``result_url``, ``result_settings``, ``td``, ``transfer``, …);
Digdag's own (``session_time``, ``task_name``, …) are left out. The source account's key comes from
``TD_API_KEY``; a target key from the params or the environment, never from a file.

What the run stores (``${td.last_job_id}``, ``${td_result_export.rows}``, …) reaches the next tasks
through ``digdag.env.store``. A failure raises :class:`~td_result_export.ExportError` whose message
is the status document's class and message; a transient one (exit 3) raises
:class:`~td_result_export.TransientExportError`, so the task's ``_retry`` runs it again.
"""

import os

from ._runner import run, spec_keys, td_keys


def spec_from_params(params):
    """The task spec in a task's params: the params that are task spec keys. A query the task
    issues gets Digdag's ``session_time`` as its scheduled time (``TD_SCHEDULED_TIME()``), as
    Digdag's own ``td>`` gives it, unless the task sets ``scheduled_time``.

    Digdag's ``_``-keys (``_retry``, ``_env``, ``_export``, …) are Digdag's and never part of the
    spec: under py> Digdag owns task retries. Two more things Digdag puts in the params are not
    the task's spec: what an earlier ``td>`` stored
    under ``td`` (``td.last_job_id``, ``td.last_job``, ``td.last_results``) is left out of the
    ``td`` block, which keeps only its spec keys (``endpoint``, ``database``, …); and a relative
    ``query_file`` is made absolute against the working directory, the project directory where
    Digdag runs the task, since the spec itself is written elsewhere."""
    keys = spec_keys()
    # Digdag's ``_``-keys are Digdag's: ``_retry`` in particular is Digdag retrying the task, and
    # passed on it would make the executable retry the whole export too (retries twice over).
    spec = {k: v for k, v in params.items() if k in keys and not k.startswith("_")}
    if isinstance(spec.get("td"), dict):
        allowed = td_keys()
        spec["td"] = {k: v for k, v in spec["td"].items() if k in allowed}
        if not spec["td"]:
            del spec["td"]
    query_file = spec.get("query_file")
    if isinstance(query_file, str) and query_file and "${" not in query_file:
        spec["query_file"] = os.path.abspath(query_file)
    issues_a_query = "query" in spec or "query_file" in spec
    if issues_a_query and "scheduled_time" not in spec and params.get("session_time"):
        spec["scheduled_time"] = params["session_time"]
    return spec


def variables_from_params(params):
    """Digdag's variables in a task's params (``session_date``, ``last_session_time``, what a
    ``td>`` stored as ``td.last_job_id``, a project's own ``_export`` values, …) as a map of
    dotted names to text, so that ``${…}`` in a ``query_file`` reads them as ``td>`` would. Task
    spec keys and Digdag's ``_``-keys (``_env``, ``_retry``, …) are not variables. They reach the
    executable in a private file (``--params``), never on its command line, which every local
    user can read."""
    keys, allowed_td = spec_keys(), td_keys()
    found = {}

    def walk(value, name, depth):
        if isinstance(value, bool):
            found[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            found[name] = str(value)
        elif isinstance(value, dict) and depth < 4:
            for k, v in value.items():
                walk(v, "%s.%s" % (name, k), depth + 1)

    for name, value in params.items():
        if name.startswith("_"):
            continue
        if name == "td" and isinstance(value, dict):
            for k, v in value.items():
                if k not in allowed_td:
                    walk(v, "td." + k, 1)
        elif name not in keys:
            walk(value, name, 0)
    return dict(sorted(found.items()))


def export(**params):
    """Runs one export from the task's params and stores what Digdag's next tasks read."""
    status = run(spec_from_params(params), params=variables_from_params(params))
    import digdag  # provided by Digdag's py> runner

    digdag.env.store(status.get("store_params") or {})
    return status
