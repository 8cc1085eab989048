"""CPython's own ``test_socketserver``, unmodified, run against ``reactor.socketserver``.

The suite comes from the running interpreter's ``test`` package. A child interpreter
binds the name ``socketserver`` to our module (``install()``) before the suite imports
it, enables the ``network`` resource, runs it with :mod:`unittest`, and reports what
ran as JSON. We check that the module under test was ours, that more than 20 tests ran,
and that none failed or was skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest
from sskit import PYTHON, ROOT, subprocess_env

RUNNER = r"""
import json, sys, unittest
import reactor.socketserver as ours
ours.install()
import test.support
test.support.use_resources = ["network"]
test.support.verbose = False
import socketserver
from reactor.facades import servers
suite_module = __import__("test.test_socketserver", fromlist=["_"])
suite = unittest.defaultTestLoader.loadTestsFromModule(suite_module)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
print(json.dumps({
    "module": socketserver.__name__,
    "module_file": socketserver.__file__,
    "suite_sees": suite_module.socketserver.__name__,
    "tcp_is_ours": issubclass(suite_module.socketserver.TCPServer, servers.TCPServer),
    "ran": result.testsRun,
    "skipped": [f"{t.id()}: {why}" for t, why in result.skipped],
    "failures": [t.id() for t, _ in result.failures + result.errors],
    "unexpected_successes": len(result.unexpectedSuccesses),
}))
"""


def _has_test_suite() -> bool:
    try:
        return importlib.util.find_spec("test.test_socketserver") is not None
    except ImportError:
        return False


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _has_test_suite(),
                    reason="this interpreter ships no 'test' package (test.test_socketserver)")
def test_cpython_test_socketserver_passes_on_the_facades() -> None:
    proc = subprocess.run([PYTHON, "-c", RUNNER], capture_output=True, text=True,
                          timeout=170, cwd=ROOT, env=subprocess_env())
    assert proc.stdout.strip(), f"the runner printed nothing:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["module"] == "reactor.socketserver"
    assert report["suite_sees"] == "reactor.socketserver"
    assert report["module_file"].startswith(str(ROOT / "reactor"))
    assert report["tcp_is_ours"]
    assert report["failures"] == [], proc.stderr[-6000:]
    assert report["skipped"] == []
    assert report["ran"] > 20
    assert proc.returncode == 0, proc.stderr[-4000:]
