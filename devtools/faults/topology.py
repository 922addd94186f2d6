"""``python -m devtools.faults.topology [--case zk ...]``: tests/faults/test_topology.py through
``scripts/faults --topology`` (about 8 min on 2 cores)."""
import sys

from devtools.faults.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--topology", *sys.argv[1:]]))
