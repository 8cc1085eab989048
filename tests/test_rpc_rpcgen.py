"""A C client made by rpcgen from tests/data/inventory.x talks to our server reading the
same file, over TCP and UDP.

The client (tests/data/inventory_client.c) is built here with the system's compiler,
``rpcgen`` (Debian package ``rpcsvc-proto``) and libtirpc (``libtirpc-dev``); missing
packages are installed when the tests run as root, else the test skips with the reason.
Its calls carry structs, strings, hypers, doubles, floats, fixed opaque, fixed and
variable arrays, optional data (a linked list), unions with a default arm, a procedure
with two arguments, and AUTH_SYS credentials; one asks for a version the server lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from redis_tools import install_package
from rpckit import DEADLINE, Inventory, serving

from handlers.rpc.dispatch import Program
from handlers.rpc.server import RPCServer
from handlers.rpc.xdrlang import load_xdr

DATA = Path(__file__).parent / "data"
TIRPC_HEADER = Path("/usr/include/tirpc/rpc/rpc.h")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = install_package(package)
        path = shutil.which(name)
        if path is None:
            pytest.skip(reason or f"{name} is missing after installing {package}")
    return path


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=DEADLINE * 3, check=False)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C client, built from the .x file by rpcgen and linked with libtirpc."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or gcc) to build the rpcgen client")
    rpcgen = tool("rpcgen", "rpcsvc-proto")
    if not TIRPC_HEADER.exists():
        reason = install_package("libtirpc-dev")
        if not TIRPC_HEADER.exists():
            pytest.skip(reason or "libtirpc-dev is installed but rpc/rpc.h is missing")
    work = tmp_path_factory.mktemp("rpcgen")
    shutil.copy(DATA / "inventory.x", work)
    shutil.copy(DATA / "inventory_client.c", work)
    for flag, output in (("-h", "inventory.h"), ("-l", "inventory_clnt.c"),
                         ("-c", "inventory_xdr.c")):
        run([rpcgen, "-N", flag, "-o", output, "inventory.x"], work)
    run([compiler, "-O1", "-w", "-I/usr/include/tirpc", "-I.", "-o", "inventory_client",
         "inventory_client.c", "inventory_clnt.c", "inventory_xdr.c", "-ltirpc"], work)
    return work / "inventory_client"


EXPECTED = """\
null ok
add hammer 0
add saw 0
add drill 2
find hammer 0 hammer 1 1 -1000000000007 1.25 1 [red,blue] 00112233445566778899aabbccddeeff
find nope 1
find '' 2 empty name
list 2 hammer saw
report 18446744073709551615 1.250 1 1 2 3 -1 1
chain saw hammer
chain empty
count 1
mismatch 1 2
"""


@pytest.mark.timeout(400)
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_the_rpcgen_client_talks_to_our_server(client: Path, proto: str) -> None:
    spec = load_xdr(str(DATA / "inventory.x"))
    inventory = Inventory(spec)
    server = RPCServer([Program.from_spec(spec, inventory)])
    with serving(server) as endpoints:
        out = run([str(client), "127.0.0.1", str(endpoints.port), proto], client.parent)
    assert out == EXPECTED
    assert inventory.callers and all(c is not None for c in inventory.callers)
    caller = inventory.callers[0]
    assert caller is not None and caller.uid == os.getuid() and caller.machinename
