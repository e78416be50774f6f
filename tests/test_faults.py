import os
import subprocess
import sys

import pytest

from mcl import faults
from mcl.files import write_bytes


def test_kill_at_stops_the_process_at_the_nth_time_a_moment_is_reached():
    code = "from mcl import faults\nfor i in range(3):\n    print(i, flush=True)\n    faults.reached('step')\n"
    env = {**os.environ, "MCL_TEST_KILL_AT": "step:2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == -9 and result.stdout.split() == ["0", "1"]


def test_other_moments_and_no_hook_do_nothing():
    faults.reached("step")  # nothing installed in this process
    hook = faults.KillAt("epoch", 1)
    hook("step")
    assert hook.seen == 0
    with pytest.raises(ValueError, match="MCL_TEST_KILL_AT"):
        faults.KillAt.from_env("stepp:1")
    with pytest.raises(ValueError, match="<moment>:<n>"):
        faults.KillAt.from_env("step")


def test_an_atomic_write_reaches_write_with_its_temporary_file_complete(tmp_path):
    target = tmp_path / "out.bin"
    seen = []

    def hook(moment: str) -> None:
        temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin.")]
        seen.append((moment, target.exists(), [p.read_bytes() for p in temporary]))

    faults.install(hook)
    try:
        write_bytes(target, b"payload")
    finally:
        faults.uninstall(hook)
    assert seen == [("write", False, [b"payload"])] and target.read_bytes() == b"payload"
