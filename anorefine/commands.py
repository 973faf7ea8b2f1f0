"""The ``anorefine`` console command: ``anorefine train|predict|export|leaderboard|bench [...]``.

``train`` and ``predict`` take Hydra overrides exactly as ``python train.py`` and ``python predict.py``
do (``anorefine train --help`` lists the options); ``export``, ``leaderboard`` and ``bench`` their own flags
(``--help``). Each subcommand's module is imported only when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _train(argv: list[str]) -> int | None:
    from anorefine.cli import run_train

    run_train(argv)
    return None


def _predict(argv: list[str]) -> int | None:
    from anorefine.cli import run_predict

    run_predict(argv)
    return None


def _leaderboard(argv: list[str]) -> int | None:
    from anorefine.leaderboard.command import main

    return main(argv)


def _export(argv: list[str]) -> int | None:
    from anorefine.export import main

    return main(argv)


def _bench(argv: list[str]) -> int | None:
    """``--gpu``: the GPU section (anorefine/bench_gpu.py) instead of the CPU tables."""
    if "--gpu" in argv:
        from anorefine.bench_gpu import main as gpu_main

        gpu_main([arg for arg in argv if arg != "--gpu"])
        return None
    from anorefine.bench import main

    main(argv)
    return None


#: Subcommand -> (what it does, its function).
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int | None]]] = {
    "train": ("one run or a sweep (-m) of the composed config; Hydra overrides", _train),
    "predict": ("score a folder of new images (predict.images=DIR); Hydra overrides", _predict),
    "export": ("a predict run's detector + refiner as ONNX (RUN_DIR [--out FILE] [--opset N])", _export),
    "leaderboard": ("the leaderboard tables from run folders (ROOT ... [--out DIR])", _leaderboard),
    "bench": ("speed, memory and exactness benchmarks ([--quick] [--gpu] [--output PATH])", _bench),
}


def usage() -> str:
    lines = ["usage: anorefine COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (text, _) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; exit status 2 with the usage for an unknown one."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(
            f"error: unknown command {args[0]!r}: use one of {', '.join(COMMANDS)}\n\n{usage()}",
            file=sys.stderr,
        )
        return 2
    _, command = COMMANDS[args[0]]
    return command(args[1:]) or 0
