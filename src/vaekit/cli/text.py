"""``vaekit text sample | reconstruct | interpolate | shuffle-auroc``: sentences in and out of a text model, calling
:func:`vaekit.apps.text.sample_text`, ``reconstruct_text``, ``interpolate_text`` and ``shuffle_auroc``."""

from __future__ import annotations

import argparse

from vaekit.cli.common import Commands, add_quiet_arg

DECODING_HELP = ("greedy (default: the most probable word at each step), sample (each word drawn at {where}) "
                 "or beam (beam search, --beam-size)")


def _cmd_sample(args: argparse.Namespace) -> int:
    from vaekit.apps.text import sample_text

    sentences = sample_text(args.model, args.n, decoding=args.decoding, temperature=args.temperature,
                            prior_temperature=args.prior_temperature, beam_size=args.beam_size, seed=args.seed,
                            out=args.out)
    print("\n".join(sentences))
    if args.out:
        print(f"wrote {len(sentences)} sentences to {args.out}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.apps.text import reconstruct_text

    pairs = reconstruct_text(args.model, args.sentences or None, data=args.data, n=args.n, decoding=args.decoding,
                             beam_size=args.beam_size, data_dir=None, out=args.out)
    for original, decoded in pairs:
        print(f"{original}\n  -> {decoded}")
    if args.out:
        print(f"wrote {len(pairs)} reconstructions to {args.out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from vaekit.apps.text import interpolate_text

    sentences = interpolate_text(args.model, args.a, args.b, steps=args.steps, method=args.method,
                                 decoding=args.decoding, beam_size=args.beam_size, out=args.out)
    print("\n".join(sentences))
    if args.out:
        print(f"wrote a {args.method} path of {args.steps} sentences to {args.out}")
    return 0


def _cmd_shuffle_auroc(args: argparse.Namespace) -> int:
    from vaekit.apps.text import shuffle_auroc

    test = shuffle_auroc(args.model, args.data, k=args.k, seed=args.seed, limit=args.limit)
    how = "exact NLL" if test.k == 1 else f"IWAE NLL, k={test.k}"
    print(f"{test.sentences} sentences against word-shuffled copies of them ({how}); mean NLL {test.nll_original:.2f} "
          f"vs {test.nll_shuffled:.2f} nats per sentence")
    print(f"AUROC {test.auroc:.4f} of the NLL per sentence, {test.auroc_per_token:.4f} per token, "
          f"{test.auroc_relative:.4f} of the NLL relative to the training text's unigram model")
    return 0


def _decoding_args(p: argparse.ArgumentParser, where: str = "temperature 1") -> None:
    p.add_argument("--decoding", default="greedy", choices=("greedy", "sample", "beam"),
                   help=DECODING_HELP.format(where=where))
    p.add_argument("--beam-size", type=int, default=5, metavar="K", help="beam width of --decoding beam (default 5)")


def register(commands: Commands) -> None:
    """Add the ``text`` group."""
    p = commands.command("text", "Sentences in and out of a text model (vaekit train --preset ptb).", lambda a: 0,
                         "vaekit text sample runs/ptb/best -n 10")
    group = p.add_subparsers(dest="text_command", metavar="COMMAND", parser_class=type(p))
    group.required = True
    p = commands.command("sample", "Draw sentences: latents from the prior, decoded; printed (and --out FILE.txt).",
                         _cmd_sample, "vaekit text sample runs/ptb/best -n 10",
                         "vaekit text sample runs/ptb/best -n 5 --decoding sample --temperature 0.8 --out s.txt",
                         parent=group)
    p.add_argument("model", metavar="MODEL", help="a text model or run directory")
    p.add_argument("-n", type=int, default=10, metavar="N", help="number of sentences (default 10)")
    _decoding_args(p, "--temperature")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="--decoding sample: the words' softmax temperature (default 1)")
    p.add_argument("--prior-temperature", type=float, default=1.0, metavar="T",
                   help="scale of the prior draw of z (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the draws (default 0)")
    p.add_argument("--out", metavar="FILE.txt", help="also write the sentences, one a line")
    add_quiet_arg(p, "no log lines")
    _register_readers(commands, group)


def _register_readers(commands: Commands, group: argparse._SubParsersAction) -> None:
    p = commands.command("reconstruct", "Encode sentences and decode their posterior means, side by side.",
                         _cmd_reconstruct, "vaekit text reconstruct runs/ptb/best 'the market closed higher'",
                         "vaekit text reconstruct runs/ptb/best --data ptb/ptb.test.txt -n 5", parent=group)
    p.add_argument("model", metavar="MODEL", help="a text model or run directory")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences (default: the first -n of --data)")
    p.add_argument("--data", metavar="PATH", help="a .txt file or text folder (test split); default the model's own")
    p.add_argument("-n", type=int, default=5, metavar="N", help="sentences of --data (default 5)")
    _decoding_args(p)
    p.add_argument("--out", metavar="FILE.txt", help="also write the pairs")
    add_quiet_arg(p, "no log lines")

    p = commands.command("interpolate", "Decode a path between two sentences' codes (a homotopy).",
                         _cmd_interpolate,
                         "vaekit text interpolate runs/ptb/best 'he said' 'the market fell' --steps 7",
                         parent=group)
    p.add_argument("model", metavar="MODEL", help="a text model or run directory")
    p.add_argument("a", metavar="SENTENCE_A")
    p.add_argument("b", metavar="SENTENCE_B")
    p.add_argument("--steps", type=int, default=5, metavar="S", help="points including both ends (default 5)")
    p.add_argument("--method", default="linear", metavar="NAME", help="linear (default) or spherical")
    _decoding_args(p)
    p.add_argument("--out", metavar="FILE.txt", help="also write the path, one sentence a line")
    add_quiet_arg(p, "no log lines")

    p = commands.command("shuffle-auroc", "AUROC of per-sentence NLL telling sentences from word-shuffled copies.",
                         _cmd_shuffle_auroc, "vaekit text shuffle-auroc runs/ptb/best --data ptb --k 100",
                         parent=group)
    p.add_argument("model", metavar="MODEL", help="a text model or run directory")
    p.add_argument("--data", metavar="PATH", help="a .txt file or text folder (test split); default the model's own")
    p.add_argument("--k", type=int, default=100, help="importance samples of the NLL (default 100)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N sentences only")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the shuffles and samples (default 0)")
    add_quiet_arg(p)
