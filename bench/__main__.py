"""`make bench`: every benchmark in turn; each prints its own figures. `--quick` for a smoke run."""

import importlib
import sys

BENCHMARKS = ["contact_intake", "notifier_send", "audit", "orders"]


def main() -> None:
    args = sys.argv[1:]
    chosen = [a for a in args if not a.startswith("-")] or BENCHMARKS
    for name in chosen:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        sys.argv = [f"bench.{name}", *[a for a in args if a.startswith("-")]]
        module.main()


if __name__ == "__main__":
    main()
