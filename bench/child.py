"""Entry of a measured child process: ``python -m bench.child module:function JSON_KWARGS OUTPUT``.

The function's returned dict is written to OUTPUT as JSON; the parent reads the child's peak
memory from ``os.wait4`` (see ``bench.common.run_measured``).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    target, kwargs, output = argv
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(kwargs))
    Path(output).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
