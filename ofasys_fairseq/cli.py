"""Console scripts: fairseq's own tools with this plugin's ``--user-dir`` filled in,
so they work from any directory once the package is installed.

    ofasys-train DATA --instruction ...             (= fairseq-train --user-dir <pkg>)
    ofasys-generate DATA --task instruction ...     (= fairseq-generate --user-dir <pkg>)
    ofasys-hydra-train --config-dir ... --config-name ...

What this plugin does to fairseq's own command lines (``fairseq-train`` etc., through
the package's import; and the console scripts): ``--instruction`` without ``--task``
means ``--task instruction`` (``choose_instruction_task``), and ``--help`` with one of its
tasks lists every option (``full_help``).
"""
import os
import sys
from typing import List, Optional, Sequence

USER_DIR = os.path.dirname(os.path.abspath(__file__))
# fairseq's tools that parse a --task, by console script and by ``fairseq_cli`` module
FAIRSEQ_TOOLS = ("train", "generate", "validate", "interactive")
OUR_TASKS = ("instruction", "multitask")


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _console_argv(argv: List[str]) -> List[str]:
    """A console script's command line for fairseq: the task chosen, ``--user-dir`` added."""
    argv = choose_instruction_task(argv)
    return argv if _given(argv, "--user-dir") else argv + ["--user-dir", USER_DIR]


def choose_instruction_task(argv: List[str]) -> List[str]:
    """fairseq's ``--task`` defaults to translation, which has no ``--instruction``: an
    instruction without a task means the instruction task."""
    if _given(argv, "--instruction") and not _given(argv, "--task"):
        return argv + ["--task", "instruction"]
    return argv


def fairseq_tool(program: str) -> Optional[str]:
    """Which of fairseq's tools ``program`` (``sys.argv[0]``) is (``FAIRSEQ_TOOLS``), as a
    console script (``fairseq-train``) or ``python -m fairseq_cli.train``; None: another."""
    name = os.path.basename(program)
    for tool in FAIRSEQ_TOOLS:
        if name == f"fairseq-{tool}" or (
                name == f"{tool}.py"
                and os.path.basename(os.path.dirname(program)) == "fairseq_cli"):
            return tool
    return None


def full_help(tool: str, argv: List[str]) -> Optional[str]:
    """``--help`` of ``tool`` for this plugin's tasks, with every option. fairseq prints
    help on its first parse, before it adds the options of the task, model, criterion,
    optimizer, ... chosen on the command line; here fairseq's own parser of the tool
    gets them all (its ``parse_args_and_arch``; for training ``--arch ofasys_tiny`` and
    ``--criterion instruction_ce`` unless others are given). None: no help asked, or
    another task (fairseq's own help then)."""
    if not (_given(argv, "-h") or _given(argv, "--help")):
        return None
    rest = [a for a in argv if a not in ("-h", "--help")]
    if _value(rest, "--task") not in OUR_TASKS:
        return None
    from fairseq import options

    parser = {"train": options.get_training_parser, "generate": options.get_generation_parser,
              "validate": options.get_validation_parser,
              "interactive": options.get_interactive_generation_parser}[tool]()
    if tool == "train":  # the model's and the criterion's options too
        rest += [] if _given(rest, "--arch") else ["--arch", "ofasys_tiny"]
        rest += [] if _given(rest, "--criterion") else ["--criterion", "instruction_ce"]
    # a placeholder for the data directory, which fairseq's parser requires
    options.parse_args_and_arch(parser, rest + ["DATA"], parse_known=True)
    return parser.format_help()


def _value(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


def choose_task_on_fairseq_command_line() -> None:
    """Apply ``choose_instruction_task`` to a fairseq tool's command line. fairseq has no
    hook for a plugin's default task; it imports ``--user-dir`` before it parses
    ``sys.argv`` (``options.get_parser``), so the package's import adds ``--task
    instruction`` there. Nothing else on the command line is touched, and nothing happens
    in any other program."""
    if fairseq_tool(sys.argv[0]):
        sys.argv[1:] = choose_instruction_task(sys.argv[1:])


def print_full_help_on_fairseq_command_line() -> None:
    """``full_help`` on a fairseq tool's command line: printed, then exit (the package's
    import, once its task, model and criterion are registered)."""
    tool = fairseq_tool(sys.argv[0])
    if tool:
        _print_full_help(tool, sys.argv[1:])


def _print_full_help(tool: str, argv: List[str]) -> None:
    text = full_help(tool, argv)
    if text is not None:
        print(text)
        sys.exit(0)


def train() -> None:
    from fairseq_cli.train import cli_main

    sys.argv = [sys.argv[0]] + _console_argv(sys.argv[1:])
    _print_full_help("train", sys.argv[1:])
    cli_main()


def generate() -> None:
    from fairseq_cli.generate import cli_main

    sys.argv = [sys.argv[0]] + _console_argv(sys.argv[1:])
    _print_full_help("generate", sys.argv[1:])
    cli_main()


def hydra_train() -> None:
    from fairseq_cli.hydra_train import cli_main

    if not any(a.startswith("common.user_dir=") for a in sys.argv[1:]):
        sys.argv.append(f"common.user_dir={USER_DIR}")
    cli_main()
