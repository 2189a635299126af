import sys

from seqvae.cli import main

sys.exit(main())
