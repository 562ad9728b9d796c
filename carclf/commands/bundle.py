"""``python -m carclf bundle info|pack|unpack|fetch``: what a trained bundle is, and moving it as one file.

``info MODEL_DIR [--json]`` prints its model card (classes, backbone, score, data, TTA, calibration, gate);
``pack MODEL_DIR OUT.zip`` writes the one-file form (manifest with format version and checksums);
``unpack FILE --models-dir DIR`` checks and installs one; ``fetch URL [--sha256 HEX]`` downloads and installs.
"""

from __future__ import annotations

import argparse

from carclf.commands.outputs import add_overwrite_argument, new_output_file

HELP = "Describe a bundle, pack a bundle folder into one file, or install a bundle file (from disk or a URL)."

# Where bundles are installed unless --models-dir says otherwise.
DEFAULT_MODELS_DIR = "models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="print what bundle folder MODEL_DIR is (reads meta.json only)")
    info.add_argument("model_dir", metavar="MODEL_DIR", help="bundle folder (models/<name>)")
    info.add_argument("--json", action="store_true", help="print the card and the whole meta.json as JSON")
    pack = actions.add_parser("pack", help="write bundle folder MODEL_DIR as one .zip file")
    pack.add_argument("model_dir", metavar="MODEL_DIR", help="bundle folder (models/<name>)")
    pack.add_argument("out", metavar="OUT.zip", help="file to write")
    add_overwrite_argument(pack)
    unpack = actions.add_parser("unpack", help="check a bundle file and install it into the models folder")
    unpack.add_argument("file", metavar="FILE", help="bundle file made by 'bundle pack'")
    unpack.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, metavar="DIR", help="models folder")
    fetch = actions.add_parser("fetch", help="download a bundle file (http/https) and install it")
    fetch.add_argument("url", metavar="URL")
    fetch.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the file")
    fetch.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, metavar="DIR", help="models folder")


def run(args: argparse.Namespace) -> int:
    from carclf import bundle_file

    if args.action == "info":
        return _info(args.model_dir, args.json)
    if args.action == "pack":
        path = bundle_file.pack_bundle(args.model_dir, new_output_file(args.out, args.overwrite))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {bundle_file.sha256_file(path)})")
    elif args.action == "unpack":
        path = bundle_file.unpack_bundle(args.file, args.models_dir)
        print(f"installed bundle {path.name} in {path}")
    else:
        progress = bundle_file.progress_line("downloading")
        path = bundle_file.fetch_bundle(args.url, args.models_dir, sha256=args.sha256, progress=progress)
        print(f"installed bundle {path.name} in {path}")
    return 0


def _info(model_dir: str, as_json: bool) -> int:
    import json

    from carclf.bundle import read_bundle_meta
    from carclf.model_card import card_text, model_card

    meta = read_bundle_meta(model_dir)
    if as_json:
        print(json.dumps({"card": dict(model_card(meta)), "meta": meta}, indent=2, ensure_ascii=False))
    else:
        print(card_text(meta))
    return 0
