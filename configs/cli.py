"""Help text of the repo's argparse commands (data.fineweb, sample.py, evals.hellaswag, ...)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for options that take a value and have a default: not for flags such as
    --no-progress, whose stored default (True) reads as if the flag were on, nor for unset (None) defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None:
            return action.help or ""
        return super()._get_help_string(action)
