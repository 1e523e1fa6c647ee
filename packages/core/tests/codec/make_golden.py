"""Regenerate golden.json from golden_cases.py with the pure-Python codec.

Run only when the format changes on purpose (bump VERSION then):
    python packages/core/tests/codec/make_golden.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tensorwire.codec import codec_py

HERE = Path(__file__).parent


def load_cases():
    spec = importlib.util.spec_from_file_location(
        "tensorwire_golden_cases", HERE / "golden_cases.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    cases = load_cases()
    out = {}
    builders = dict(cases.CASES)
    builders[cases.BFLOAT16_CASE] = cases.bfloat16_array
    for name, build in builders.items():
        obj = build()
        out[name] = {
            "dumps": codec_py.dumps(obj).hex(),
            "encode_header": bytes(codec_py.encode(obj)[0]).hex(),
        }
    (HERE / "golden.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(out)} vectors to {HERE / 'golden.json'}")


if __name__ == "__main__":
    main()
