"""Cross-check: does the official Fintoc Python SDK accept a Fintoc-Signature header?

Usage: verify_signature.py SECRET HEADER BODY_FILE
Exit 0 when fintoc.webhook.WebhookSignature.verify_header accepts it, 1 (with the SDK's
message on stderr) when it refuses.
"""

import sys

from fintoc.errors import WebhookSignatureError
from fintoc.webhook import WebhookSignature


def main() -> int:
    secret, header, body_file = sys.argv[1:4]
    with open(body_file, encoding="utf-8") as f:
        payload = f.read()
    try:
        WebhookSignature.verify_header(payload, header, secret)
    except WebhookSignatureError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
