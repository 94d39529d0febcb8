"""``watcher explain``: why a transaction was (or was not) credited, for the operator on support.

One command for every network: the network's family (``networks.get(name).family``)
picks who reads the transaction (:mod:`.evm`: receipts and logs; :mod:`.solana`:
``getTransaction`` answers); both fill the one data model (:mod:`.model`), the
ledger's state is added the same way (:mod:`.state`: from ``DATABASE_URL`` or the
embedded database under ``WATCHER_DATA_DIR``, as ``watcher run`` keeps it) and one
renderer shows it, verdict and total first (:mod:`.render`), so amounts, verdicts and
ledger states read alike everywhere.
A network added to the registry is explained with nothing written for it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Coroutine
from typing import Any

from watcher import networks
from watcher.explain import evm, model, render, solana, state
from watcher.settings import Settings

Builder = Callable[
    [argparse.Namespace, Settings], Coroutine[Any, Any, model.Report | model.Refusal]
]

# Who reads a transaction, per network family (all take the same arguments).
BUILDERS: dict[networks.Family, Builder] = {"evm": evm.report, "solana": solana.report}


async def run(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """Explain ``args.tx`` (or ``args.from_file``) on ``args.chain``: (output, exit code).

    Exit codes: 0 with a report, 1 when the transaction is not found, 2 for bad
    usage or input.
    """
    got = await BUILDERS[networks.get(args.chain).family](args, settings)
    if isinstance(got, model.Refusal):
        return got.message, got.code
    await state.read_ledger(got, settings)
    if args.json:
        return json.dumps(got.as_json(), indent=2), 0
    return render.render(got, show_all=args.all), 0
