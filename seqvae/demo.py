"""``make demo``: the bench that registry.yaml's ``demo`` section describes.

By default: several compositions trained briefly on the embedded data set, evaluated on its
test split, the results table printed and the TensorBoard command shown. No data files and no
network are needed; the first run prepares the embedded corpus once into the data cache.
"""

from __future__ import annotations

import argparse
import sys

from seqvae.cli import main as cli_main
from seqvae.composition import registry_section


def main(argv: list[str] | None = None) -> int:
    demo = registry_section("demo")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    args, extra = parser.parse_known_args(argv)
    return cli_main([
        "bench", "--models", ",".join(demo["models"]), "--dataset", demo["dataset"],
        *map(str, demo.get("args", [])), "--out", args.out, *extra,
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
