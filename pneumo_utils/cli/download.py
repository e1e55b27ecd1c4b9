"""``pneumo download``: the public data set, verified and extracted safely."""

from __future__ import annotations

import argparse

from pneumo_utils import config


def _command_download(args: argparse.Namespace) -> int:
    if args.weights:
        return _download_weights()
    from pneumo_utils.data import download

    root = download.download(args.source, args.dest, url=args.url, sha256=args.sha256, overwrite=args.overwrite)
    print(f"data set ready in {root}; check it with: pneumo index --data-dir {root}")
    return 0


def _download_weights() -> int:
    """Every pinned ImageNet file the profiles can use, into Keras's cache (or found where it already lies)."""
    from pneumo_utils.cli.common import UsageError
    from pneumo_utils.model import weights

    for spec in weights.PINNED.values():
        try:
            path = weights.fetch_imagenet(spec)
        except weights.WeightsNotFound as error:
            raise UsageError(str(error)) from None
        print(f"{spec.file_name}: {config.portable_path(path)} (SHA-256 {spec.sha256[:12]}... checked)")
    return 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    fetch = commands.add_parser(
        "download", help="fetch the public data set into --dest/chest_xray, or the ImageNet weights (--weights)"
    )
    fetch.add_argument(
        "--weights",
        action="store_true",
        help="fetch Keras's official ImageNet files for the pretrained members into Keras's cache "
        "(~/.keras/models; found in $PNEUMO_WEIGHTS_DIR or there already: nothing is downloaded)",
    )
    fetch.add_argument(
        "--source",
        choices=["mendeley", "kaggle"],
        default="mendeley",
        help="mendeley: ChestXRay2017.zip over https; kaggle: kagglehub (pip install kagglehub)",
    )
    fetch.add_argument("--dest", default=str(config.PROJECT_ROOT / "data"), help="folder to install into")
    fetch.add_argument("--url", default=None, help="download this zip instead of the source's address")
    fetch.add_argument("--sha256", default=None, help="expected SHA-256 of the zip")
    fetch.add_argument("--overwrite", action="store_true", help="replace an existing <dest>/chest_xray")
    fetch.set_defaults(handler=_command_download)
