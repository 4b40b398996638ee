"""`facedit`: the command line of facedit-client. `facedit --help`, `facedit <command> --help`."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

from facedit_client.cli import commands, exits, photos
from facedit_client.cli.images import MissingExtra
from facedit_client.cli.output import print_json
from facedit_client.cli.settings import ENV, SettingsError, resolve
from facedit_client.client import Client
from facedit_client.connection import DEFAULT_FAITHFUL_TIMEOUT_S, version
from facedit_client.errors import FaceditError
from facedit_client.retry import RetryPolicy

EXAMPLES = """\
examples (the stack of `make run`: pack digiface64, attributes yaw, roll, smile, mouth_open, skin_tone):
  facedit attributes                                what to edit: directions, methods, strength ranges
  facedit edit seed:7 --edit smile=1.5 --keep yaw -o smiling.png
  facedit edit face.jpg --edit mouth_open=2 --original before.png -o after.png
  facedit edit id:<latent id> --edit smile=-1 -o less.png      the same face again, no upload
  facedit edit seed:7 --text "a big grin=2" -o grin.png          a text edit (words method)
  facedit edit-photo photos/ --edit smile=1.5 --keep yaw -o out/  every face of every photo
  facedit edit-photo me.jpg --edit smile=1.5 --faithful -o me_smiling.jpg   the person kept (seconds a face)
  facedit sweep seed:7 yaw --from -3 --to 3 --steps 12 -o yaw.gif      (GIF/grid: facedit-client[images])
  facedit create-direction my_smile --positive smiling/ --negative neutral/
  facedit edit seed:7 --edit custom/my_smile=1.5 -o mine.png
  facedit attributes --json | jq '.directions[].id'
  facedit --address facedit.example.com:443 --tls attributes     flags go before or after the command

connection (flags anywhere on the line, else variables, else the config file):
  --address  FACEDIT_ADDRESS (default 127.0.0.1:50050)    --token  FACEDIT_TOKEN (prefer the variable)
  --tls / --no-tls  FACEDIT_TLS    --tls-ca  FACEDIT_TLS_CA    --tls-server-name  FACEDIT_TLS_SERVER_NAME
  --timeout  FACEDIT_TIMEOUT (s per call, 30; --faithful calls 120 unless set)   --retries  FACEDIT_RETRIES (3)
  --pack  FACEDIT_PACK
  config file: --config, FACEDIT_CONFIG or ~/.config/facedit/config.toml (TOML: address = "...", tls = true,
  [profiles.NAME] tables chosen by --profile); `facedit config` shows what is used and from where.

exit codes: 0 ok; 1 unexpected error; 2 usage (flags, files, config, a missing extra); 3 some photos of a
batch failed; 4 the server rejected the request (INVALID_ARGUMENT, NOT_FOUND, ...); 5 not allowed (token,
role); 6 unavailable or busy after retries, or the deadline passed. Guide: docs/clients.md.
"""

FACE_HELP = "seed:<n> (a generated face), id:<latent id> (cached by an earlier call) or an image file"


def common_options() -> argparse.ArgumentParser:
    """Options accepted before and after the command. Defaults are SUPPRESSed so that a value given
    before the command survives the command's own parser; settings.resolve fills in the rest."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    S = argparse.SUPPRESS
    g = p.add_argument_group("connection and output (anywhere on the line; see `facedit --help`)")
    g.add_argument("--address", default=S, help="gateway host:port [FACEDIT_ADDRESS; 127.0.0.1:50050]")
    g.add_argument("--token", default=S, help="bearer token [FACEDIT_TOKEN: prefer it, flags show in `ps`]")
    g.add_argument("--tls", action=argparse.BooleanOptionalAction, default=S,
                   help="TLS with the system's CAs [FACEDIT_TLS]")
    g.add_argument("--tls-ca", default=S, help="PEM file of the gateway's CA: TLS trusting it [FACEDIT_TLS_CA]")
    g.add_argument("--tls-server-name", default=S, help="name to check in the certificate [FACEDIT_TLS_SERVER_NAME]")
    g.add_argument("--timeout", type=float, default=S,
                   help="seconds per call, retries included [FACEDIT_TIMEOUT; 30, --faithful calls 120]")
    g.add_argument("--retries", type=int, default=S,
                   help="retries on UNAVAILABLE / RESOURCE_EXHAUSTED, with backoff [FACEDIT_RETRIES; 3]")
    g.add_argument("--pack", default=S, help="the pack to use [FACEDIT_PACK; the gateway's default]")
    g.add_argument("--config", default=S, help="config file [FACEDIT_CONFIG; ~/.config/facedit/config.toml]")
    g.add_argument("--profile", default=S, help="a [profiles.NAME] table of the config file [FACEDIT_PROFILE]")
    g.add_argument("--json", action="store_true", default=S, help="print one JSON object for scripts")
    g.add_argument("-v", "--verbose", action="store_true", default=S, help="say when a call is retried")
    return p


def _sub(sub, name: str, help: str, examples: str, common) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog="examples:\n" + examples, parents=[common],
                          formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)


def _edit_flags(p: argparse.ArgumentParser, text: bool = True) -> None:
    p.add_argument("--edit", action="append", default=[], metavar="TARGET=STRENGTH",
                   help="an attribute (smile=1.5) or direction id (custom/my_smile=2, istrc/yaw=0.2); repeatable")
    if text:
        p.add_argument("--text", action="append", default=[], metavar='"PHRASE=THETA"',
                       help='a word or phrase with theta, e.g. "a big grin=2" (words method); repeatable')
        p.add_argument("--text-mode", choices=["addition", "averaging"], default="addition",
                       help="how text edits move the latent (default addition)")
    p.add_argument("--keep", action="append", default=[], metavar="ATTRIBUTE",
                   help="an attribute to keep fixed while editing (repeatable)")
    p.add_argument("--method", help="method of attribute edits (interfacegan, refined, tlgan, crg, sefa, istrc, words; "
                                    "default the pack's; `facedit attributes` lists them)")
    p.add_argument("--format", choices=["png", "jpeg"], help="image format (default: from -o's extension, else png)")


def _faithful_flag(p: argparse.ArgumentParser, what: str, reported: bool = False) -> None:
    p.add_argument("--faithful", action="store_true",
                   help=f"invert {what} faithfully: optimised against the photo, so the result stays the person "
                        f"(seconds per face, deadline 120 s unless --timeout; default: fast, the encoder alone, "
                        f"a look-alike)" + ("; prints the inversion's identity before/after and its time"
                                            if reported else ""))


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    p = argparse.ArgumentParser(prog="facedit", parents=[common], epilog=EXAMPLES, allow_abbrev=False,
                                description="Edit faces with the facedit gateway (facedit.v1.Gateway).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"facedit-client {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _sub(sub, "attributes", "the pack's attributes and directions: methods, recommended strengths, limits",
         "  facedit attributes\n  facedit attributes --json\n  facedit --pack synth attributes\n", common)

    e = _sub(sub, "edit", "edit one face (a photo of a single aligned face, a seed or a cached latent id)",
             "  facedit edit seed:7 --edit smile=1.5 --keep yaw -o smiling.png\n"
             "  facedit edit face.png --edit smile=1 --edit mouth_open=1 --original before.png -o after.png\n"
             "  facedit edit id:<latent id> --edit smile=-1 -o less.png\n"
             "  facedit edit seed:7 --text \"a big grin=2\" --text \"mouth wide open=1\" -o words.png\n"
             "  facedit edit seed:7 --edit smile=0.25 --method istrc -o istrc.png\n"
             "  facedit edit face.png --faithful --edit smile=1.5 -o me.png   (seconds: the person, no look-alike)\n",
             common)
    e.add_argument("face", help=FACE_HELP)
    _edit_flags(e)
    _faithful_flag(e, "an image file face")
    e.add_argument("-o", "--out", default="edited.png", help="the edited image (default edited.png)")
    e.add_argument("--original", help="also write the unedited rendering here")
    e.add_argument("--skip-scores", action="store_true", help="faster: the image only, no classifier scores")

    ph = _sub(sub, "edit-photo", "edit every face of photos of any size and blend them back",
              "  facedit edit-photo group.jpg --edit smile=1.5 -o smiling.jpg\n"
              "  facedit edit-photo photos/ --edit smile=1.5 --keep yaw -o out/\n"
              "  facedit edit-photo photos/ more/ --edit yaw=1.5 --replace -o out/ --json > report.json\n"
              "  facedit edit-photo me.jpg --edit smile=1.5 --faithful -o me_smiling.jpg\n", common)
    ph.add_argument("photos", nargs="+", help="photo files or folders of photos (their image files, not recursive)")
    _edit_flags(ph, text=False)
    _faithful_flag(ph, "every face", reported=True)
    ph.add_argument("-o", "--out", default="edited", help="output folder, or a file for one photo (default edited/)")
    ph.add_argument("--replace", action="store_true", help="paste the rendered face instead of the edit's change "
                                                           "(needed for pose edits such as yaw)")
    ph.add_argument("--max-faces", type=int, default=0, help="faces per photo, best first (default the gateway's 16)")
    ph.add_argument("--jobs", type=int, default=2, help="photos in flight at once (default 2)")
    ph.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="the progress bar on stderr (default: when stderr is a terminal)")

    sw = _sub(sub, "sweep", "frames of one edit over a range of strengths: a GIF, a grid or a folder of frames",
              "  facedit sweep seed:7 smile --from -3 --to 3 --steps 9 -o smile.gif\n"
              "  facedit sweep face.png yaw --steps 8 --columns 4 --scale 2 -o yaw_grid.png\n"
              "  facedit sweep seed:7 smile -o frames/        (PNG frames; needs no Pillow)\n", common)
    sw.add_argument("face", help=FACE_HELP)
    _faithful_flag(sw, "an image file face")
    sw.add_argument("target", help="attribute or direction id (smile, interfacegan/smile, custom/my_smile)")
    sw.add_argument("--from", dest="start", type=float, default=-3.0, help="first strength (default -3)")
    sw.add_argument("--to", dest="stop", type=float, default=3.0, help="last strength (default 3)")
    sw.add_argument("--steps", type=int, default=9, help="frames, 2-64 (default 9)")
    sw.add_argument("--keep", action="append", default=[], metavar="ATTRIBUTE", help="attribute to keep fixed")
    sw.add_argument("--method", help="method of the attribute's direction (default the pack's)")
    sw.add_argument("-o", "--out", default="sweep.gif",
                    help=".gif: animated; .png/.jpg: a grid; anything else: a folder of frames (default sweep.gif)")
    sw.add_argument("--columns", type=int, help="grid columns (default: one row)")
    sw.add_argument("--duration-ms", type=int, default=120, help="GIF: milliseconds per frame (default 120)")
    sw.add_argument("--boomerang", action="store_true", help="GIF: play forth and back")
    sw.add_argument("--scale", type=int, default=1, help="GIF/grid: nearest-neighbour upscaling (default 1)")

    en = _sub(sub, "encode", "a face photo -> a cached latent id (edit it by id: facedit edit id:<id> ...)",
              "  facedit encode face.png\n  facedit encode face.png --reconstruction recon.png --json\n"
              "  facedit encode face.png --faithful --reconstruction recon.png\n", common)
    en.add_argument("photo", help="an image file of one aligned face")
    _faithful_flag(en, "the face", reported=True)
    en.add_argument("--reconstruction", help="also write the face as the generator renders its latent")

    g = _sub(sub, "generate", "faces from seeds",
             "  facedit generate 1 2 3 -o faces/\n", common)
    g.add_argument("seeds", nargs="+", type=int, help="seeds (at most 64)")
    g.add_argument("-o", "--out", default=".", help="folder of seed_<n>.png (default .)")
    g.add_argument("--format", choices=["png", "jpeg"])

    cd = _sub(sub, "create-direction", "a direction custom/<name> from photos with and without an attribute",
              "  facedit create-direction my_smile --positive smiling/ --negative neutral/\n"
              "  facedit create-direction my_beard --positive a.png b.png --negative c.png --method istrc\n"
              "  facedit edit seed:7 --edit custom/my_smile=1.5 -o mine.png     (use it at once)\n", common)
    cd.add_argument("name", help="the direction becomes custom/<name> (1-40 characters of a-z 0-9 _ -)")
    cd.add_argument("--positive", nargs="+", required=True, help="photos (files or folders) WITH the attribute, 1-32")
    cd.add_argument("--negative", nargs="+", required=True, help="photos WITHOUT the attribute, 1-32")
    cd.add_argument("--attribute", default="", help="label of what it edits (default: the name)")
    cd.add_argument("--method", choices=["crg", "istrc"], help="crg (default): in the latent; istrc: FaceNet space")
    cd.add_argument("--replace", action="store_true", help="overwrite an existing custom/<name> of yours")

    b = _sub(sub, "blend", "ISTRC: two faces slerped at --t, or the spherical mean of 2-16 faces",
             "  facedit blend seed:1 seed:2 --t 0.25 -o blend.png\n"
             "  facedit blend seed:1 seed:2 face.png --weight 1 --weight 1 --weight 2 -o mean.png\n", common)
    b.add_argument("faces", nargs="+", help=FACE_HELP + "; 2-16")
    b.add_argument("--t", type=float, help="two faces: 0 = the first, 1 = the second (default: the mean)")
    b.add_argument("--weight", type=float, action="append", default=[], help="one per face: a weighted mean")

    a = _sub(sub, "arithmetic", "ISTRC: a - b + c in FaceNet embedding space",
             "  facedit arithmetic smiling.png neutral.png other_neutral.png -o other_smiling.png\n", common)
    for name in ("a", "b", "c"):
        a.add_argument(name, help=FACE_HELP)
    a.add_argument("--linear", action="store_true", help="renormalised linear a - b + c (default: along the sphere)")
    for s in (b, a):
        _faithful_flag(s, "the image file faces")
        s.add_argument("-o", "--out", default=f"{s.prog.split()[-1]}.png", help="the result image")
        s.add_argument("--inputs", help="also write each input face through the ISTRC circle into this folder")
        s.add_argument("--format", choices=["png", "jpeg"])

    _sub(sub, "config", "the connection settings in use and where each came from (flag, variable, file)",
         "  facedit config\n  FACEDIT_ADDRESS=10.0.0.5:50050 facedit config --json\n", common)
    return p


HANDLERS = {"attributes": commands.attributes, "edit": commands.edit, "edit-photo": photos.edit_photo,
            "sweep": commands.sweep, "encode": commands.encode, "generate": commands.generate,
            "create-direction": commands.create_direction, "blend": commands.istrc_face,
            "arithmetic": commands.istrc_face}


def fail(code: int, status: str, message: str, as_json: bool, trace_id: str | None = None) -> int:
    """Report a failure on stderr (and as JSON on stdout with --json); returns the exit code."""
    if as_json:
        print_json({"error": {"code": status, "message": message, "trace_id": trace_id, "exit_code": code}})
    print(f"facedit: {status}: {message}" + (f" (trace id {trace_id})" if trace_id else ""), file=sys.stderr)
    return code


def run(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """The command's work; returns its exit code (cli/exits.py)."""
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    verbose = getattr(args, "verbose", False)
    flags = {name: getattr(args, name, None) for name in (*ENV, "config", "profile")}
    try:
        settings = resolve(flags, environ)
    except SettingsError as err:
        return fail(exits.USAGE, "USAGE", str(err), args.json)
    if args.command == "config":
        return commands.show_config(settings, args)

    def on_retry(attempt: int, error: FaceditError, wait_s: float) -> None:
        if verbose:
            print(f"facedit: attempt {attempt} failed ({error.code}: {error.message}); retrying in {wait_s:.2f} s",
                  file=sys.stderr)
    try:
        # a timeout given (flag, variable, config) bounds faithful calls too; the default leaves them 120 s
        faithful_timeout = DEFAULT_FAITHFUL_TIMEOUT_S if settings.sources["timeout"] == "default" else settings.timeout
        client = Client(settings.address, timeout_s=settings.timeout, faithful_timeout_s=faithful_timeout,
                        token=settings.token, tls=settings.tls, tls_ca=settings.tls_ca,
                        tls_server_name=settings.tls_server_name, pack=settings.pack,
                        retry=RetryPolicy(max_attempts=settings.retries + 1, on_retry=on_retry))
    except (ValueError, OSError) as err:
        return fail(exits.USAGE, "USAGE", str(err), args.json)
    try:
        return HANDLERS[args.command](client, args)
    except FaceditError as err:
        return fail(exits.for_code(err.code), err.code, err.message, args.json, err.trace_id)
    except MissingExtra as err:
        return fail(exits.USAGE, "USAGE", str(err), args.json)
    except BrokenPipeError:  # stdout closed early (`facedit ... | head`): main() exits quietly
        raise
    except (ValueError, OSError) as err:  # a face spec, a file, an edit that cannot be read
        return fail(exits.USAGE, "USAGE", str(err) if not isinstance(err, OSError) or not err.filename
                    else f"{err.filename}: {err.strerror}", args.json)
    except KeyboardInterrupt:
        return fail(exits.INTERRUPTED, "INTERRUPTED", "stopped (Ctrl-C)", args.json)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    """The console script `facedit`."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = exits.ERROR
    sys.exit(code)


if __name__ == "__main__":
    main()
