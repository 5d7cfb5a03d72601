"""Kill a loop of saves over one model directory at 8 moments, then count the directories that no longer load.

python tools/kill_saves.py                          # this checkout
PYTHONPATH=/path/to/old/src python tools/kill_saves.py   # another version of trainlock, for comparison
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SAVER = """
import sys, torch, trainlock as tl
model, meta = tl.load(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    i += 1
    tl.save(model, sys.argv[1], {"task": "mnist", "round": i})
"""


def main(n: int = 8) -> None:
    import trainlock as tl

    root = tempfile.mkdtemp()
    src = tl.save(tl.models.build("cnn", input_shape=[1, 28, 28], num_classes=10), f"{root}/src", {"task": "mnist"})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = 0
    for i in range(n):
        d = f"{root}/m{i}"
        shutil.copytree(src, d)
        p = subprocess.Popen([sys.executable, "-c", SAVER, d], stdout=subprocess.PIPE, env=env)
        p.stdout.readline()
        time.sleep(0.05 + 0.07 * i)
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = subprocess.run(
            [sys.executable, "-c", f"import trainlock as tl; tl.load({d!r})"], capture_output=True, env=env
        )
        bad += r.returncode != 0
    shutil.rmtree(root, ignore_errors=True)
    print(f"trainlock {tl.__version__}: {bad} of {n} killed saves left an unloadable directory")


if __name__ == "__main__":
    main()
