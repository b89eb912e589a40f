"""A real Python client of the bulk door: ``elasticsearch`` (8.x or 9.x) or ``opensearch-py``.

Run as ``python es_python.py URL INDEX KIND AUTH TOKEN`` (KIND: elasticsearch or opensearch;
AUTH: api_key, basic or bearer). Sends one batch twice with ``helpers.streaming_bulk`` and prints
one JSON line: the server's version as ``info()`` read it, and per send the (action, status,
result or error type) of each item.
"""

import json
import sys

url, index, kind, auth, token = sys.argv[1:6]
if kind == "opensearch":
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[url], http_auth=("shipper", token), timeout=30)
else:
    from elasticsearch import Elasticsearch, helpers

    credentials = {
        "api_key": {"api_key": token},
        "basic": {"basic_auth": ("shipper", token)},
        "bearer": {"bearer_auth": token},
    }[auth]
    client = Elasticsearch(url, request_timeout=30, **credentials)

version = client.info()["version"]["number"]
actions = [
    # With an _id: create; a second send is a 409 for each.
    *(
        {"_op_type": "create", "_index": index, "_id": f"doc-{n}",
         "_source": {"@timestamp": "2026-11-30T10:00:00Z", "host": {"name": "web-1"}, "n": n}}
        for n in range(5)
    ),
    # Without: index, the id is the content hash; a second send is 200 noop for each.
    *(
        {"_op_type": "index", "_index": index,
         "_source": {"@timestamp": 1796032800000 + n, "service": {"name": "api"}, "n": n}}
        for n in range(5)
    ),
]  # fmt: skip
sends = []
for _ in range(2):
    items = []
    for _ok, item in helpers.streaming_bulk(client, actions, raise_on_error=False, chunk_size=100):
        [(action, answer)] = item.items()
        items.append([action, answer["status"], answer.get("result") or answer["error"]["type"]])
    sends.append(items)
print(json.dumps({"version": version, "sends": sends}))
