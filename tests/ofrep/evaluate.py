"""Evaluates flags through OpenFeature's OFREP provider (PyPI
`openfeature-provider-ofrep`, with `openfeature-sdk`), as an application
would: `python3 evaluate.py BASE_URL TOKEN` reads one evaluation per stdin
line, `FLAG<TAB>TARGETING_KEY<TAB>ATTRIBUTES_JSON` (an empty key: none),
and prints one JSON line per evaluation: value, variant, reason, error code.
TOKEN "-" sends no token."""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> None:
    base_url, token = sys.argv[1], sys.argv[2]
    headers = (lambda: {}) if token == "-" else (lambda: {"Authorization": f"Bearer {token}"})
    api.set_provider(OFREPProvider(base_url, headers_factory=headers))
    client = api.get_client()
    for line in sys.stdin:
        flag, key, attrs = line.rstrip("\n").split("\t")
        ctx = EvaluationContext(targeting_key=key or None, attributes=json.loads(attrs))
        d = client.get_string_details(flag, "default", ctx)
        print(
            json.dumps(
                {
                    "value": d.value,
                    "variant": d.variant,
                    "reason": str(d.reason.value if hasattr(d.reason, "value") else d.reason),
                    "error": d.error_code.value if d.error_code else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
