#!/usr/bin/env python3
"""Memory under a guessing burst (docs/benchmarks.md). Not a test, not in CI.

Starts a gatehouse binary (release build) on SQLite with the dev connector,
fires N concurrent wrong passwords at the login form and M concurrent wrong
client secrets at /token from 127.0.0.1, and meanwhile signs in with the
right password from 127.0.0.2. Reports peak (VmHWM) and post-burst (VmRSS,
after 20 s idle) memory of the server, how the burst was answered, and
whether and how fast the right password signed in.

    cargo build --release --bin gatehouse
    scripts/bench-guessing.py [--binary target/release/gatehouse] [--logins 1000] [--secrets 1000]
"""

import argparse
import itertools
import asyncio
import collections
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

PASSWORD_HASH = "$argon2id$v=19$m=19456,t=2,p=1$DdyCBm3CaX8h2fDebOJg7w$lwWRRk3zY1yYHotbfe34wdjFwJbHjd2UVpI1bHgwdgc"
CONFIG = f"""
[[tenants]]
id = "default"
display_name = "Bench"

[[tenants.connectors]]
id = "dev"
type = "dev"
users = [ {{ email = "admin@example.com", password_hash = "{PASSWORD_HASH}" }} ]

[[tenants.resources]]
uri = "http://127.0.0.1:8765/mcp"
name = "Demo"
scopes = ["mcp:read"]

[[tenants.clients]]
client_id = "demo-public"
redirect_uris = ["http://127.0.0.1/callback"]
grant_types = ["authorization_code"]
token_endpoint_auth_method = "none"

[[tenants.clients]]
client_id = "svc"
secret = "right-secret-0123456789"
grant_types = ["client_credentials"]
token_endpoint_auth_method = "client_secret_basic"
"""


import base64 as _b64
import hashlib as _hashlib
CHALLENGE = _b64.urlsafe_b64encode(_hashlib.sha256(b"bench-verifier").digest()).rstrip(b"=").decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS", "Threads")):
                k, v = line.split(":", 1)
                out[k] = v.strip()
    return out


async def request(port, method, path, body=b"", headers=None, source="127.0.0.1"):
    """One HTTP/1.1 request on its own connection; (status, headers, body)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0)
    )
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    if body:
        head.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = collections.defaultdict(list)
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()].append(v.strip())
    return status, hdrs, rest.decode(errors="replace")


async def login_form(port, source):
    q = urllib.parse.urlencode({
        "response_type": "code", "client_id": "demo-public",
        "redirect_uri": "http://127.0.0.1/callback", "code_challenge": CHALLENGE,
        "code_challenge_method": "S256", "resource": "http://127.0.0.1:8765/mcp",
        "scope": "mcp:read", "state": "s",
    })
    status, h, _ = await request(port, "GET", f"/authorize?{q}", source=source)
    cookie = "; ".join(c.split(";")[0] for c in h.get("set-cookie", []))
    loc = urllib.parse.urlparse(h["location"][0])
    _, h2, html = await request(port, "GET", f"{loc.path}?{loc.query}",
                                headers={"Cookie": cookie}, source=source)
    cookie = "; ".join([cookie] + [c.split(";")[0] for c in h2.get("set-cookie", [])])
    field = lambda n: re.search(f'name="{n}" value="([^"]*)"', html).group(1)
    return cookie, field("pending"), field("csrf")


async def submit(port, form, user, password, source):
    cookie, pending, csrf = form
    body = urllib.parse.urlencode({"pending": pending, "csrf": csrf,
                                   "username": user, "password": password}).encode()
    return await request(port, "POST", "/login", body, {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, source)


async def secret(port, password, source):
    import base64
    basic = base64.b64encode(f"svc:{password}".encode()).decode()
    body = b"grant_type=client_credentials&resource=http%3A%2F%2F127.0.0.1%3A8765%2Fmcp"
    return await request(port, "POST", "/token", body, {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/x-www-form-urlencoded"}, source)


async def burst(n, make):
    async def one():
        try:
            return (await make())[0]
        except Exception as e:  # connection refused/reset under load
            return type(e).__name__
    return collections.Counter(await asyncio.gather(*(one() for _ in range(n))))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/gatehouse")
    ap.add_argument("--logins", type=int, default=1000)
    ap.add_argument("--secrets", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=20)
    ap.add_argument("--sources", type=int, default=1,
                    help="spread each burst over this many source addresses (127.1.x.y), "
                         "so the per-source throttle lets most of it reach the hashing pool")
    args = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    tmp = tempfile.mkdtemp()
    with open(f"{tmp}/gh.toml", "w") as f:
        f.write(CONFIG)
    port = free_port()
    env = dict(os.environ, GATEHOUSE_DATA_DIR=f"{tmp}/data", GATEHOUSE_CONFIG=f"{tmp}/gh.toml",
               GATEHOUSE_DATABASE_URL=f"sqlite://{tmp}/gh.db", GATEHOUSE_LOG="error")
    proc = subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "w"))
    try:
        for _ in range(200):
            try:
                if (await request(port, "GET", "/healthz"))[0] == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.05)
        print("idle at start:", memory(proc.pid))

        pool = ["127.0.0.1"] if args.sources <= 1 else [
            f"127.1.{i // 250}.{i % 250 + 1}" for i in range(args.sources)]
        sources = itertools.cycle(pool)
        print(f"attack from {len(pool)} source address(es)")
        attacker = await login_form(port, "127.0.0.1")
        owner = await login_form(port, "127.0.0.2")
        attack = asyncio.ensure_future(burst(args.logins, lambda: submit(
            port, attacker, "admin@example.com", "wrong", next(sources))))
        await asyncio.sleep(0.3)
        t = time.monotonic()
        status, _, _ = await submit(port, owner, "admin@example.com", "password", "127.0.0.2")
        took = time.monotonic() - t
        print(f"login burst: {args.logins} concurrent wrong passwords -> {dict(await attack)}")
        print(f"right password from 127.0.0.2 during the burst: HTTP {status} in {took:.3f} s")
        print("after login burst:", memory(proc.pid))

        attack = asyncio.ensure_future(burst(args.secrets, lambda: secret(port, "wrong", next(sources))))
        await asyncio.sleep(0.3)
        t = time.monotonic()
        status, _, _ = await secret(port, "right-secret-0123456789", "127.0.0.2")
        took = time.monotonic() - t
        print(f"secret burst: {args.secrets} concurrent wrong secrets -> {dict(await attack)}")
        print(f"right secret from 127.0.0.2 during the burst: HTTP {status} in {took:.3f} s")
        print("after secret burst:", memory(proc.pid))
        await asyncio.sleep(args.idle)
        print(f"after {args.idle} s idle:", memory(proc.pid))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
