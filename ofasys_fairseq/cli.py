"""Console scripts: fairseq's own tools with this plugin's ``--user-dir`` filled in,
so they work from any directory once the package is installed.

    ofasys-train DATA --task instruction ...        (= fairseq-train --user-dir <pkg>)
    ofasys-generate DATA --task instruction ...     (= fairseq-generate --user-dir <pkg>)
    ofasys-hydra-train --config-dir ... --config-name ...
"""
import os
import sys

USER_DIR = os.path.dirname(os.path.abspath(__file__))


def _argv_with_user_dir(argv):
    if any(a == "--user-dir" or a.startswith("--user-dir=") for a in argv):
        return argv
    return argv + ["--user-dir", USER_DIR]


def train() -> None:
    from fairseq_cli.train import cli_main

    sys.argv = [sys.argv[0]] + _argv_with_user_dir(sys.argv[1:])
    cli_main()


def generate() -> None:
    from fairseq_cli.generate import cli_main

    sys.argv = [sys.argv[0]] + _argv_with_user_dir(sys.argv[1:])
    cli_main()


def hydra_train() -> None:
    from fairseq_cli.hydra_train import cli_main

    if not any(a.startswith("common.user_dir=") for a in sys.argv[1:]):
        sys.argv.append(f"common.user_dir={USER_DIR}")
    cli_main()
