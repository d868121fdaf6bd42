"""``vaekit recommend``: parse arguments, call :func:`vaekit.apps.recommend`, print the top items."""

from __future__ import annotations

import argparse

from vaekit.cli.common import Commands, write_json_report


def _item_ids(text: str) -> list[str]:
    """``1,50,172`` -> ["1", "50", "172"] (ids are strings: ``"001"`` stays ``"001"``)."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected comma-separated item ids such as 1,50,172")
    return ids


def _cmd_recommend(args: argparse.Namespace) -> int:
    from vaekit.apps import recommend

    result = recommend(args.model, args.items, user=args.user, data=args.data, k=args.k, item_names=args.item_names)
    print(result.format_table())
    if args.json:
        write_json_report(args.json, result.to_dict())
    return 0


def register(commands: Commands) -> None:
    """Add ``recommend``."""
    p = commands.model_command(
        "recommend",
        "The top items for a user of a recommender (a model trained on interaction data), leaving out the items the "
        "user has. Item ids the model does not know are listed in a warning and ignored.",
        _cmd_recommend,
        "vaekit recommend runs/ml-100k --items 1,50,172 -k 10",
        "vaekit recommend runs/ml-100k --items 1,50,172 --item-names ../shared/data/ml-100k/items.tsv",
        "vaekit recommend runs/ml-100k --user 42 --data ../shared/data/ml-100k/u.data --json recs.json",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--items", type=_item_ids, metavar="ID,ID,...", help="ids of the items the user has")
    who.add_argument("--user", metavar="ID", help="a user of the interaction file --data: their positives are the "
                     "user's items")
    p.add_argument("--data", metavar="FILE", help="the interaction file of --user (default the model's training file)")
    p.add_argument("-k", type=int, default=20, metavar="K", help="how many items (default 20)")
    p.add_argument("--item-names", metavar="FILE", help="a table of item ids and titles (CSV/TSV with a header, "
                   "e.g. MovieLens items.tsv) to print titles")
    p.add_argument("--json", metavar="FILE", help="also write the recommendations as JSON")
    p.add_argument("--quiet", action="store_true", help="no info lines (the warning about unknown ids stays)")
