"""Command-line flags every script shares the habits of: ranges checked by the flag's own type,
one-line parse errors, every default shown in --help, and named recipes as defaults.

    p = Parser("Train X.", recipes={"seed004": {...}, "seed002": {...}})
    p.add_argument("--lr", type=ranged(float, 0, 100, lo_open=True), help="peak learning rate")
"""
import argparse
import copy


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default, also of flags without a help string (which
    ArgumentDefaultsHelpFormatter skips); the description and epilog keep their line breaks."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and whose --help shows every default.

    recipes: {name: {flag dest: value}}; the epilog lists them. select_recipe(name) makes one
    the defaults (flags on the command line still win).
    """

    def __init__(self, description, recipes=None, epilog=None, **kwargs):
        if recipes:
            epilog = (epilog or "") + \
                "recipes (--recipe NAME sets these defaults; flags you give still win):\n"
            for name, values in recipes.items():
                line = f"  {name}:"
                for item in map(_as_flag, values.items()):
                    if len(line) + len(item) > 95:
                        epilog, line = epilog + line + "\n", "   "
                    line += " " + item
                epilog += line + "\n"
        super().__init__(description=description, formatter_class=_ShowDefaults, epilog=epilog,
                         **kwargs)
        self.recipes = recipes or {}

    def select_recipe(self, name):
        if name not in self.recipes:
            self.error(f"argument --recipe: unknown recipe {name!r}; choose from "
                       f"{', '.join(self.recipes)}")
        self.set_defaults(recipe=name, **self.recipes[name])

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _as_flag(item):
    """("scale", [0.85, 1.15]) -> "--scale 0.85 1.15"; booleans as --name / --no-name."""
    name, value = item[0].replace("_", "-"), item[1]
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))


def ranged(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse type: `kind` (int or float) within [lo, hi]; *_open excludes that end."""
    def parse(text):
        value = kind(text)  # a ValueError here reads "invalid int value: 'x'"
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if below or above:
            span = (f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, "
                    f"{'inf' if hi is None else hi}{')' if hi_open or hi is None else ']'}")
            raise argparse.ArgumentTypeError(f"{value} is outside {span}")
        return value
    parse.__name__ = kind.__name__
    return parse
