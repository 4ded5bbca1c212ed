"""The server's heap (RssAnon) before and after each hostile document of the security
review, sent N times over one keep-alive connection: whether one document's memory is
kept. Needs a running server and its pid.

    python3 bench/hostile_rss.py PID PORT N [frag23,frag10,aliases,braces]
"""
import http.client, json, sys

pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def heap():
    for line in open(f"/proc/{pid}/status"):
        key, value = line.split(":", 1)
        if key == "RssAnon":
            return int(value.split()[0]) / 1024


def doubling(levels):
    q = "{ ...F0 }"
    for i in range(levels):
        q += f" fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
    return q + f" fragment F{levels} on Query {{ __typename }}"


documents = {
    "frag23": doubling(23),
    "frag10": doubling(10),
    "aliases": "{ " + "".join(f"a{i}: __typename " for i in range(1500)) + " }",
    "braces": "{a" * 60000 + "}" * 60000,
}
order = sys.argv[4].split(",") if len(sys.argv) > 4 else list(documents)
c = http.client.HTTPConnection("127.0.0.1", port)
for name in order:
    body = json.dumps({"query": documents[name]})
    before = heap()
    for _ in range(n):
        c.request("POST", "/graphql", body, {"content-type": "application/json"})
        answer = c.getresponse().read()
        assert b"BAD_USER_INPUT" in answer, answer[:200]
    print(f"{name}: {len(body)} bytes x {n}: heap {before:.1f} -> {heap():.1f} MiB")
