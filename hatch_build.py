"""hatchling's build hook: sluiceway's one C extension, the CSV block cut (src/sluiceway/_blockcut.c).

It is optional. With a C compiler (the one Python was built with, ``sysconfig``'s LDSHARED,
or ``$CC``) the module is compiled into the wheel, or beside its source for an editable
install; without one the install goes on and :mod:`sluiceway.blocks` cuts with Python's own
C loops (the same blocks, slower: bench/block_cut.py). ``SLUICEWAY_NO_NATIVE=1`` skips it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("SLUICEWAY_NO_NATIVE"):
            return
        source = Path(self.root) / "src" / "sluiceway" / "_blockcut.c"
        built = source.with_name("_blockcut" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        link = os.environ.get("CC")
        command = [
            *shlex.split(f"{link} -shared" if link else sysconfig.get_config_var("LDSHARED"))
        ]
        command += ["-O2", "-fPIC", "-I" + sysconfig.get_paths()["include"]]
        command += [str(source), "-o", str(built)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(
                f"sluiceway: the C block cut was not built ({' '.join(command)}: {detail.strip()}); "
                "imports by blocks cut in Python instead"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install finds it beside the source
            build_data["force_include"][str(built)] = f"sluiceway/{built.name}"
