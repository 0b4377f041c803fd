"""`python -m bench [--quick]`: run every benchmark module in this folder, one after the other."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    failed = 0
    for name in names:
        print(f"== bench.{name}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], check=False).returncode != 0
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
