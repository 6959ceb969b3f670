"""Runs the ``td-result-export`` executable of this wheel on a task spec and reads what it left."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading

EXECUTABLE = "td-result-export"
# Set to use another executable than the one installed with this package.
BINARY_ENV = "TD_RESULT_EXPORT_BIN"

# Keys whose values are secrets wherever they appear, and the shapes of a TD API key in a text.
_KEY_NAMES = ("apikey", "api_key", "master_key", "write_only_key", "password")
_KEY_SHAPE = re.compile(r"\b\d+/[0-9a-fA-F]{40}\b")
_URL_USER = re.compile(r"://([^\s?#]+)@")
# A URL's user part that stands for a key in a hint (`${secret:NAME}`, `APIKEY`), and is none.
_PLACEHOLDER = re.compile(r"^(\$\{[^${}]*\}|[A-Z_]+)$")


class ExportError(RuntimeError):
    """The export failed. ``str()`` is the status document's class and message."""

    def __init__(self, message, exit_code=1, error_class=None, retryable=False, status=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.error_class = error_class
        self.retryable = retryable
        self.status = status


class TransientExportError(ExportError):
    """The export failed for a reason that may pass (exit code 3): running it again is safe."""


def binary():
    """The path of the executable: ``$TD_RESULT_EXPORT_BIN``, else the one installed next to this
    Python (the wheel puts it in the environment's scripts directory), else the one on PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return override
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidate = os.path.join(scripts, EXECUTABLE)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(EXECUTABLE)
    if found:
        return found
    raise ExportError(
        "the %s executable is not installed: pip install td-result-export (or set %s)" % (EXECUTABLE, BINARY_ENV),
        exit_code=2,
        error_class="NotInstalled",
    )


_SCHEMA = None


def _task_schema():
    """The task spec's JSON Schema, as the executable embeds it (read once)."""
    global _SCHEMA
    if _SCHEMA is None:
        schema = subprocess.run([binary(), "schema", "task"], check=True, stdout=subprocess.PIPE).stdout
        _SCHEMA = json.loads(schema.decode("utf-8"))
    return _SCHEMA


def spec_keys():
    """The top-level keys of a task spec, as the executable's own JSON Schema defines them."""
    return frozenset(_task_schema()["properties"])


def td_keys():
    """The keys of a task spec's ``td`` block (endpoint, apikey, database, …)."""
    return frozenset(_task_schema()["properties"]["td"]["properties"])


def secrets_of(spec, env=None):
    """Every secret value a spec and an environment hold: values under key-named keys, and the
    user part of td:// URLs."""
    found = set()

    def walk(value, name):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, name)
        elif isinstance(value, str) and value:
            if name.lower() in _KEY_NAMES and not _PLACEHOLDER.match(value):
                found.add(value)
            for url in re.finditer(r"td://([^\s?#]*)@", value):
                if url.group(1) and not _PLACEHOLDER.match(url.group(1)):
                    found.add(url.group(1))

    walk(spec, "")
    for name, value in (env or {}).items():
        if value and (name.upper() == "TD_API_KEY" or any(k in name.lower() for k in _KEY_NAMES)):
            found.add(value)
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def scrub(text, secrets):
    """``text`` with every known secret, key-shaped string and URL user part masked."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _KEY_SHAPE.sub("***", text)
    return _URL_USER.sub(lambda m: m.group(0) if _PLACEHOLDER.match(m.group(1)) else "://***@", text)


def externalize_secrets(spec):
    """``spec`` with every secret value replaced by a ``${secret:…}`` reference, and the
    environment variables that hold them: the spec file holds no key, and the executable does
    not warn about a key written in the spec (Digdag has already put the values in)."""
    env = {}

    def reference(value):
        var = "TDRE_PY_SECRET_%d" % len(env)
        env[var] = value
        return "${secret:%s}" % var.lower()

    def walk(value, name):
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, name) for v in value]
        if isinstance(value, str) and value and "${" not in value:
            if name.lower() in _KEY_NAMES:
                return reference(value)
            if value.startswith("td://"):
                body, question, query = value[len("td://"):].partition("?")
                user, at, location = body.rpartition("@")
                if at and user:
                    return "td://" + reference(user) + "@" + location + question + query
        return value

    return walk(spec, ""), env


def _child_setup(parent):
    """Runs in the child between fork and exec: Linux sends it SIGTERM when this process dies,
    even by SIGKILL (``PR_SET_PDEATHSIG``), so a killed runner leaves no export running alone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(3)


class _Forwarding:
    """While the child runs: SIGTERM and SIGINT to this process go to the child, which stops
    cleanly (it kills the query it issued, cleans up, writes its status document); once it has
    ended and the temporary directory is gone, the signal is delivered here again as it was meant."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, process):
        self.process = process
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._forward)
        return self

    def _forward(self, signum, _frame):
        self.received = signum
        try:
            self.process.send_signal(signum)
        except ProcessLookupError:
            pass

    def __exit__(self, *_exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False

    def redeliver(self):
        if self.received is not None:
            os.kill(os.getpid(), self.received)


def _forward(stream, out, secrets):
    for raw in iter(stream.readline, b""):
        out.write(scrub(raw.decode("utf-8", "replace"), secrets))
        out.flush()


def run(spec, env=None, args=(), stdout=None, stderr=None, params=None):
    """Runs one export of ``spec`` (a dict of task spec keys); returns its status document.

    ``params`` (a map of names to text) are the values of ``${name}`` in the spec and its query
    file. The spec, the params and the status document go to a private temporary directory (mode
    0700, files 0600) that is removed after, so nothing of them shows on a command line.
    Output is passed on line by line with secrets masked. Raises :class:`ExportError` (or
    :class:`TransientExportError` for exit code 3) when the export fails.
    """
    env = dict(os.environ if env is None else env)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    secrets = secrets_of(spec, env)
    spec, secret_env = externalize_secrets(spec)
    env.update(secret_env)
    work = tempfile.mkdtemp(prefix="td-result-export-")
    try:
        spec_path = os.path.join(work, "spec.json")
        status_path = os.path.join(work, "status.json")
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        command = [binary(), "run", spec_path, "--status", status_path, "--runner", "py", "--entry-dir", work] + list(args)
        if params:
            params_path = os.path.join(work, "params.json")
            fd = os.open(params_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(params, f)
            command += ["--params", params_path]
        parent = os.getpid()
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: _child_setup(parent),
        )
        with _Forwarding(process) as forwarding:
            pump = threading.Thread(target=_forward, args=(process.stdout, stdout, secrets), daemon=True)
            pump.start()
            _forward(process.stderr, stderr, secrets)
            code = process.wait()
            pump.join()
        status = _read_status(status_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    forwarding.redeliver()
    if code == 0 and status is not None:
        return status
    raise _failure(code, status, secrets)


def _read_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _failure(code, status, secrets):
    error = (status or {}).get("error") or {}
    error_class = error.get("class") or "ExitCode%d" % code
    message = error.get("message") or "td-result-export exited with code %d and left no status document" % code
    retryable = bool(error.get("retryable")) or code == 3
    text = scrub("%s: %s" % (error_class, message), secrets)
    if retryable:
        text += " (transient: running the task again is safe)"
        return TransientExportError(text, code, error_class, True, status)
    return ExportError(text, code, error_class, False, status)
