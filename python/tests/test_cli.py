"""The command line, against the examples' calculator and greeter."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from support import CALC, KITCHEN, TestCase


def run(*args: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "ipc", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


class CommandLine(TestCase):
    def test_list_shows_objects_and_signatures(self) -> None:
        out = run("list", CALC())
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("Calculator (trait Calculator, fingerprint ", out.stdout)
        self.assertIn("  add(i64,i64)->i64\n", out.stdout)
        self.assertIn("Greeter (trait Greeter", out.stdout)
        verbose = run("list", "-v", CALC())
        self.assertIn("  div(a: i64, b: i64) -> Result<i64, MathError>\n", verbose.stdout)

    def test_call_prints_the_answer_as_json(self) -> None:
        out = run("call", CALC(), "Calculator", "add", "2", "3")
        self.assertEqual((out.returncode, out.stdout), (0, "5\n"), out.stderr)
        out = run("call", CALC(), "Greeter", "greet", "42")
        self.assertEqual(out.stdout, '"Hello, 42!"\n', "a String parameter takes the text as written")
        out = run("call", KITCHEN(), "Kitchen", "echo_shape", '{"Rect": [3, 4]}')
        self.assertEqual(json.loads(out.stdout), {"Rect": [3, 4]})
        out = run("call", KITCHEN(), "Kitchen", "count", "3")
        self.assertEqual(out.stdout.splitlines(), ["0", "1", "2"])
        out = run("call", KITCHEN(), "Kitchen", "echo_vec", "hi")
        self.assertEqual(out.stdout, '"0x6869"\n')

    def test_failures_exit_non_zero_with_a_message(self) -> None:
        out = run("call", CALC(), "Calculator", "div", "1", "0")
        self.assertEqual(out.returncode, 1)
        self.assertIn('"DivideByZero"', out.stderr)
        out = run("call", CALC(), "Calculator", "add", "1")
        self.assertEqual(out.returncode, 2)
        self.assertIn("takes 2 argument", out.stderr)
        out = run("call", CALC(), "Calculator", "add", "x", "1")
        self.assertEqual(out.returncode, 2)
        self.assertIn("argument 'a'", out.stderr)
        out = run("call", CALC(), "Abacus", "add", "1", "2")
        self.assertEqual(out.returncode, 1)
        self.assertIn("no object named `Abacus`", out.stderr)
        out = run("call")
        self.assertEqual(out.returncode, 2)


