"""A light /healthz reader beside a load test: one keep-alive connection, a request every
5 ms, latency percentiles printed at the end. bench/run.sh runs it against the API port
and the HEALTH_BIND_ADDR port during the hostile-document flood.

    python3 bench/healthz_probe.py HOST PORT SECONDS
"""
import http.client, time, sys
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = http.client.HTTPConnection(host, port)
lat = []
end = time.monotonic() + secs
while time.monotonic() < end:
    t = time.monotonic()
    c.request("GET", "/healthz"); r = c.getresponse(); r.read()
    lat.append((time.monotonic() - t) * 1000)
    time.sleep(max(0, 0.005 - (time.monotonic() - t)))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"healthz probe: n={len(lat)} p50={q(0.5):.2f} ms p95={q(0.95):.2f} ms p99={q(0.99):.2f} ms max={lat[-1]:.2f} ms")
