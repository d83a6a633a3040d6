"""`python -m groundrt.train ARGS` is `groundrt train ARGS`; under torchrun, distributed:

    torchrun --nproc-per-node 4 -m groundrt.train --data data/synth --out runs/teacher
"""

import sys

from groundrt.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
