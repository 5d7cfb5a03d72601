"""Writes are complete or absent, and two processes never write the same output at once."""

import os
import subprocess
import sys
import time

import pytest

from trainlock.atomic import Busy, exclusive, replace_dir, write_text, writing_file
from trainlock.cli import main


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "report.md", "old")
    with pytest.raises(RuntimeError), writing_file(path, suffix=".png") as tmp:
        tmp.write_text("half a plot")
        raise RuntimeError("killed while plotting")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
    with writing_file(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_directory_build_leaves_the_old_directory(tmp_path):
    d = tmp_path / "model"
    replace_dir(d, lambda t: (t / "a.txt").write_text("1"))

    def broken(t):
        (t / "a.txt").write_text("2")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_dir(d, broken)
    assert (d / "a.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]


HOLDER = """
import sys, time
from trainlock.atomic import exclusive
with exclusive(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(30)
"""


def test_a_second_process_on_the_same_output_fails_clearly(tmp_path, capsys):
    out = tmp_path / "runs" / "locked"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"holding"
        with (
            pytest.raises(Busy, match=f"being written by another trainlock process \\(pid {holder.pid}\\)"),
            exclusive(out),
        ):
            pass
        t0 = time.time()
        assert main(["demo", "--quick", "--out", str(out)]) == 2  # refused at once, before any work
        assert time.time() - t0 < 5 and "another trainlock process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out):  # the lock died with its process
        pass
