"""scripts/faults: the fault suite (tests/faults) through pytest, then the table of its cases.

Observer at its default settings under real faults on servers the suite starts itself, then
every acknowledged (202) event reconciled against ClickHouse and UFSE. Only SESSION_IDLE_TIMEOUT
and RETRY_TIME_SCALE are ever changed; the table names them. Options it does not know go to pytest.

    scripts/faults                   # every case at full scale, then cases 1, 2, 5, 8 on chDB
    scripts/faults --broker amqp     # the same with RabbitMQ as CELERY_BROKER_URL
    scripts/faults --case 0 --case 5 # chosen cases;  --chdb: on chDB;  --list: the cases
    scripts/faults --ci              # the CI subset (0, 1, 2, 5, 10, 11; 14 on RabbitMQ) at reduced load
    scripts/faults --topology        # the four cases on the scale-out topology (--case zk: one of them)
"""
import argparse
import sys

import pytest

from devtools import ROOT
from devtools.faults.cases import CASES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser("scripts/faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", help="run this case (repeatable)")
    ap.add_argument("--ci", action="store_true", help="the CI subset at reduced load (what make test runs)")
    ap.add_argument("--chdb", action="store_true", help="run the chosen cases on chDB instead of the 18.16 server")
    ap.add_argument("--broker", choices=("redis", "amqp"), help="Celery's broker: the case's Redis (default) "
                    "or a private RabbitMQ node; --ci without it runs 14 on RabbitMQ, the rest on Redis")
    ap.add_argument("--topology", action="store_true", help="the scale-out topology's cases (ch, redis, rabbit, zk)")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("--keep", action="store_true", help="keep the servers' data and logs even when every case passed")
    args, rest = ap.parse_known_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.n:>2}  {c.title}" + ("  [also chDB]" if c.chdb else ""))
        return 0
    opts = ["-p", "no:cacheprovider", "-v", "--capture=tee-sys"] + (["--fault-keep"] if args.keep else [])
    if args.topology:
        sel = ["-k", " or ".join(f"[{c}]" for c in args.case)] if args.case else []
        return pytest.main([str(ROOT / "tests/faults/test_topology.py"), "-m", "topology", *opts, *sel, *rest])
    if args.case and not all(c.isdigit() and int(c) in CASES for c in args.case):
        ap.error(f"--case: one of {sorted(CASES)}")
    opts += ["--fault-scale", "ci" if args.ci else "full"] + (["--chdb"] if args.chdb else [])
    opts += [f"--fault-case={c}" for c in args.case or ()] + ([f"--broker={args.broker}"] if args.broker else [])
    return pytest.main([str(ROOT / "tests/faults/test_cases.py"), *opts, *rest])


if __name__ == "__main__":
    sys.exit(main())
