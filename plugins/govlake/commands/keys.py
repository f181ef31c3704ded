"""``govlake keys init|list|rotate|check``: the Parquet encryption keyring (ADR 0014); and
``govlake token-key``: the local join-token key (``govlake.masking``).

An administrator's command, run as the pipeline's and the service's OS user: the keyring
(``$GOVLAKE_PARQUET_KEYRING`` or ``<work dir>/secrets/parquet-keys.json``, mode 0600) is
outside the repository and the lake. Key material is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="Parquet encryption keys: init, list, rotate, check (admin)")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    i = ksub.add_parser("init", help="create the keyring with one key (no-op when it exists)")
    i.set_defaults(func=_init)
    ls = ksub.add_parser("list", help="key ids, dates and states (never key material)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    r = ksub.add_parser("rotate", help="a new key for new versions; older keys retire but still decrypt")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_rotate)
    c = ksub.add_parser("check", help="every published encrypted file opens with a key of the keyring")
    c.set_defaults(func=_check)

    t = sub.add_parser("token-key", help="create the local join-token key if none exists (never committed)")
    t.set_defaults(func=_token_key)


def _init(args: argparse.Namespace) -> int:
    from govlake.sharing import crypto

    p = crypto.ensure_keyring()
    print(f"keyring {p}: current key {crypto.current_key_id(p)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from govlake.sharing import crypto

    try:
        keys = crypto.key_ids()
    except crypto.KeyringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(keys, indent=2))
    else:
        for k in keys:
            print(f"{k['id']}  {k.get('state', 'active'):8}  created {k.get('created_at', '?')}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from govlake.sharing import crypto

    try:
        out = crypto.rotate()
    except crypto.KeyringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"new key {out['key_id']} (new versions); retired {', '.join(out['retired']) or '-'} "
              f"(old versions stay readable) — {out['keyring']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Open the footer of every encrypted published file (data files and renditions)."""
    import pyarrow.parquet as pq

    from govlake import config
    from govlake.sharing import crypto
    from govlake.storage import Lake

    lake = Lake(config.lake_root())
    bad = n = 0
    for f in sorted(lake.published_root.rglob("*.parquet")):
        try:
            if not crypto.is_encrypted(f):
                continue
            n += 1
            pq.read_metadata(f, **crypto.arrow_read_options(f))
        except Exception as exc:  # noqa: BLE001 - report every file
            bad += 1
            print(f"{f}: {exc}", file=sys.stderr)
    print(f"{n} encrypted file(s) checked, {bad} unreadable")
    return 1 if bad else 0


def _token_key(args) -> int:
    from govlake import masking

    print(masking.ensure_local_key())
    return 0
