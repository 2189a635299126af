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
    command = ["bench", "--models", ",".join(demo["models"]), "--dataset", demo["dataset"],
               *map(str, demo.get("args", [])), "--out", args.out, *extra]  # fmt: skip
    # Said first because preparing the data set (once, under a minute) shows its progress bar
    # only on a terminal: a log then says what is running before the first run starts.
    print(f"seqvae demo: seqvae {' '.join(command)}", flush=True)
    print(f"seqvae demo: reading {demo['dataset']} (prepared into the data cache the first time: under a minute)",
          flush=True)  # fmt: skip
    return cli_main(command)


if __name__ == "__main__":
    sys.exit(main())
