#!/usr/bin/env python3
"""Create a new recipe by copying ``recipes/_template``.

    python scripts/new_recipe.py my_enhancer --title "My enhancer"

Copies the template folder to ``recipes/<name>``, fills in the name and the
title, and prints the next steps (see docs/adding_a_recipe.md). Refuses to
overwrite an existing recipe.
"""

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def create_recipe(name, title, recipes_dir=ROOT / "recipes"):
    """Copy the template to ``recipes_dir/name``; return the new folder."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"recipe name {name!r}: use lower case letters, digits and _")
    template = Path(recipes_dir) / "_template"
    target = Path(recipes_dir) / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another name")
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".yaml", ".md"}:
            text = path.read_text(encoding="utf-8")
            text = text.replace("TEMPLATE_NAME", name).replace("TEMPLATE_TITLE", title)
            path.write_text(text, encoding="utf-8")
    return target


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="folder name under recipes/ (lower_case)")
    parser.add_argument("--title", default=None, help="one-line title (default: the name)")
    args = parser.parse_args(argv)
    try:
        target = create_recipe(args.name, args.title or args.name.replace("_", " "))
    except (ValueError, FileExistsError) as err:
        sys.exit(f"new_recipe.py: {err}")
    print(f"Created {target.relative_to(ROOT)}. Next: edit its train.py (model, loss) and")
    print("hparams/train.yaml, run `make test` (the harness finds and runs it), fill its README.")


if __name__ == "__main__":
    main()
