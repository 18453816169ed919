"""A stack asked to (``stop_database=True``, as the bench scripts ask) stops the embedded
PostgreSQL it started when it stops, so its home can be removed at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# In a process of its own: a second stack in the test process would replace the suite's
# settings (configure) when it stops.
SCRIPT = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    from sluiceway.local.stack import LocalStack
    from sluiceway.settings import Settings

    if __name__ == "__main__":
        home = Path(sys.argv[1])
        with LocalStack(Settings(home=home), workers=1, stop_database=True):
            pid = (home / "pg" / "postmaster.pid").read_text().split()[0]
            print("running", pid)
        print("pid file left:", (home / "pg" / "postmaster.pid").exists())
        shutil.rmtree(home)  # raises if the server were still writing there
        print("removed")
    """
)


def test_a_stack_that_stops_its_database_leaves_a_home_that_can_be_removed(
    tmp_path: Path,
) -> None:
    script = tmp_path / "stop_database.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("running ")
    assert lines[1:] == ["pid file left: False", "removed"]
