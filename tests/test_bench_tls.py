"""python -m bench.tls: TLS echo and full handshakes, the reactor against asyncio.

A short run of the harness (a few connections, a fraction of a second each) checks that
it measures both servers with the C client, writes its section of the report and puts
its target line in the Targets block; the figures themselves are the benchmark's
business. Needs a C compiler, libssl-dev and openssl (installed as root, else a skip).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis_tools import install_package

from bench import tls
from bench.kept import TLS_SECTION, kept_section, kept_verdicts

OLD_LINE = ("FAIL TLS echo 1 KiB x4 conns, reactor requests per server-CPU-second vs asyncio: "
            "0.50x (old)")
OLD_REPORT = """\
# socketreactor benchmark results

## Targets

```
PASS echo 1 KiB x100 conns, reactor requests per CPU-second vs uvloop: 1.16x
{old_line}
```

## Idle connections: memory per connection

rows

{section}

## Servers

- servers
"""


def _needs_openssl() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build bench/tlsload.c")
    for present, package in ((lambda: Path("/usr/include/openssl/ssl.h").exists(),
                              "libssl-dev"),
                             (lambda: shutil.which("openssl") is not None, "openssl")):
        if not present():
            reason = install_package(package)
            if not present():
                pytest.skip(reason or f"{package} is missing after installing it")


@pytest.mark.timeout(300)
def test_a_short_run_measures_both_servers_and_writes_its_section(tmp_path: Path) -> None:
    _needs_openssl()
    results = tmp_path / "RESULTS.md"
    old = "\n".join([TLS_SECTION[0], "## TLS (an old run)", "```", OLD_LINE, "```",
                     TLS_SECTION[1]])
    results.write_text(OLD_REPORT.format(section=old, old_line=OLD_LINE))
    argv = ["--reps", "1", "--duration", "0.4", "--warmup", "0.1", "--connections", "4",
            "--slots", "2", "--results", str(results), "--out", str(tmp_path / "out"),
            "--note", "A busy machine."]
    assert tls.main(argv) == 0

    records = (tmp_path / "out" / "tls.jsonl").read_text().splitlines()
    assert len(records) == 4  # two workloads, two servers
    text = results.read_text()
    section = kept_section(text, TLS_SECTION)
    assert section is not None and "an old run" not in text and "0.50x (old)" not in text
    # the command that made it, and the note once, as a sentence
    assert "`python -m bench.tls --reps 1 --duration 0.4" in section
    assert section.count("A busy machine.") == 1
    for server in ("reactor", "asyncio"):
        for workload in ("tls-echo-1KiB-c4", "tls-handshake-c2"):
            row = next(ln for ln in section.splitlines()
                       if ln.startswith(f"| {workload} | {server} |"))
            assert "failed" not in row and row.split("|")[8].strip() == "0/0", row
    # the target line, in the section and once in the Targets block, the old one gone
    verdicts = dict((text.split(":")[0], status) for status, text in kept_verdicts(section))
    echo = "TLS echo 1 KiB x4 conns, reactor requests per server-CPU-second vs asyncio " \
           "(same SSLContext)"
    assert verdicts[echo] in ("PASS", "FAIL")
    targets = text[text.index("## Targets"):text.index("## Idle")]
    assert targets.count(echo) == 1
    assert "vs uvloop: 1.16x" in targets  # bench.run's lines stay
    assert "TLS full handshakes x2 concurrent" in targets
    # where it was: between the idle tables and the servers
    assert text.index("## Idle") < text.index(TLS_SECTION[0]) < text.index("## Servers")


def test_the_servers_share_one_context_recipe(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the certificate")
    cert, key = tls.make_certificate(tmp_path)
    context = tls.server_context(str(cert), str(key))
    assert context.check_hostname is False and context.verify_mode.name == "CERT_NONE"
    assert "BEGIN CERTIFICATE" in cert.read_text()
