"""``python -m specstop_gym.training ALGO``: print the path of the shipped RL Baselines3 Zoo
hyperparameter file of ALGO (default ppo), for ``python -m rl_zoo3.train --conf-file``."""

from __future__ import annotations

import sys

from . import zoo_conf_file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m specstop_gym.training [ALGO]   (prints the zoo hyperparameter file of ALGO)",
              file=sys.stderr)
        return 2
    try:
        print(zoo_conf_file(args[0] if args else "ppo"))
    except ValueError as e:
        print(f"python -m specstop_gym.training: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
