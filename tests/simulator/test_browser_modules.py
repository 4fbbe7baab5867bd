"""The simulator's browser modules: their Node unit tests (tests/simulator/js), and the browser's
copy of the phone rule agreeing with the server's (simulator/phones.py) number for number."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from simulator.phones import msisdn

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

TYPED = ["0712345678", "0712 345 678", "+254-712-345-678", "254712345678", "0110000001", "+254115999999",
         "0115 999 999", "0116000000", "0120000000", "0812345678", "712345678", "07123456789", "+2540712345678",
         "254708374149", "2547083741490", "07", "", "- -", "0 7 0 8 3 7 4 1 4 9", "0708\t374149"]


def node(*args: str) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run([NODE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NODE_NO_WARNINGS": "1"})


@needs_node
def test_the_node_unit_tests_of_the_simulators_browser_modules_pass():
    result = node("--test", "--test-reporter=spec", "tests/simulator/js/")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_node
def test_the_browser_and_the_server_read_a_typed_number_alike():
    script = ("import { msisdnFromTyped } from './simulator/static/js/sim-format.js';"
              f"console.log(JSON.stringify({json.dumps(TYPED)}.map(msisdnFromTyped)));")
    result = node("--input-type=module", "-e", script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [msisdn(typed, typed=True) for typed in TYPED]
