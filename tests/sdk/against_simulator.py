"""The official Fintoc Python SDK, pointed at fintoc-refresh's simulator.

Usage:
  against_simulator.py api SIM_URL API_KEY LINK_TOKEN
      creates a refresh intent, gets the Link, lists an account's movements across pages;
      prints one JSON line with what it saw.
  against_simulator.py movements SIM_URL API_KEY LINK_TOKEN ACCOUNT_ID SINCE PER_PAGE CONFIRMED_ONLY
      lists one account's movements with account.movements.list(since=..., per_page=...,
      confirmed_only=...) (CONFIRMED_ONLY "default" leaves it out); prints one JSON line with
      their ids and statuses in the order the SDK yielded them.
  against_simulator.py verify SECRET DELIVERIES_JSON
      verifies every captured webhook delivery ([{"header":..., "body":...}]) with
      WebhookSignature.verify_header; prints how many passed.
Any SDK error ends the script with a non-zero status.
"""

import json
import sys

import fintoc.core
from fintoc import Fintoc
from fintoc.webhook import WebhookSignature


def api(sim_url: str, api_key: str, link_token: str) -> None:
    # The SDK has no base-URL option; it reads this module constant when a client is built.
    fintoc.core.API_BASE_URL = sim_url
    client = Fintoc(api_key)
    intent = client.refresh_intents.create(link_token=link_token)
    link = client.links.get(link_token)
    accounts = list(link.accounts.list())
    account = accounts[0]
    movements = list(account.movements.list(per_page=20))
    listed_intents = list(client.refresh_intents.list(link_token=link_token))
    print(json.dumps({
        "intent_id": intent.id,
        "intent_status": intent.status,
        "link_id": link.id,
        "accounts": [a.id for a in accounts],
        "movements": len(movements),
        "movement_ids_unique": len({m.id for m in movements}) == len(movements),
        "listed_intents": [i.id for i in listed_intents],
    }))


def movements(sim_url: str, api_key: str, link_token: str, account_id: str, since: str,
              per_page: str, confirmed_only: str) -> None:
    fintoc.core.API_BASE_URL = sim_url
    link = Fintoc(api_key).links.get(link_token)
    account = next(a for a in link.accounts.list() if a.id == account_id)
    params = {"since": since, "per_page": int(per_page)}
    if confirmed_only != "default":
        params["confirmed_only"] = confirmed_only == "true"
    listed = list(account.movements.list(**params))
    print(json.dumps({
        "ids": [m.id for m in listed],
        "statuses": [m.status for m in listed],
    }))


def verify(secret: str, deliveries_file: str) -> None:
    with open(deliveries_file, encoding="utf-8") as f:
        deliveries = json.load(f)
    for delivery in deliveries:
        WebhookSignature.verify_header(delivery["body"], delivery["header"], secret)
    print(json.dumps({"verified": len(deliveries)}))


if __name__ == "__main__":
    if sys.argv[1] == "api":
        api(*sys.argv[2:5])
    elif sys.argv[1] == "movements":
        movements(*sys.argv[2:9])
    elif sys.argv[1] == "verify":
        verify(*sys.argv[2:4])
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")
