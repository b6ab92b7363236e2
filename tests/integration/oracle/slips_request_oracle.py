#!/usr/bin/env python3
"""Runs the REAL Slips code that answers a peer's request, case by case.

Usage: slips_request_oracle.py SLIPS_ROOT REDIS_PORT IP...

For each IP, calls Slips' own `get_ip_info_from_slips(ip, db)` from
SLIPS_ROOT/modules/p2p_trust/utils/utils.py, where `db.get_ip_info` is
Slips' own `RedisDB.get_ip_info` from
slips_files/core/database/redis_db/database.py (its source is compiled on
its own, so the redis package and the rest of Slips are not needed), on a
fake `rcache` whose `hget` reads Redis DB 1 over a tiny RESP client and
decodes replies as redis-py does with `decode_responses=True` (UTF-8,
strict). Prints one line per IP: `ok` or `raise <ExceptionName>`.
"""
import ast
import json
import socket
import sys
from typing import Optional

root, port, ips = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sys.path.insert(0, root)
from modules.p2p_trust.utils.utils import get_ip_info_from_slips  # noqa: E402

# Slips' get_ip_info, taken from its source as is.
src_path = f"{root}/slips_files/core/database/redis_db/database.py"
tree = ast.parse(open(src_path).read())
func = next(
    n for n in ast.walk(tree)
    if isinstance(n, ast.FunctionDef) and n.name == "get_ip_info"
)
module = ast.Module(body=[func], type_ignores=[])
namespace = {"json": json, "Optional": Optional, "dict": dict, "list": list}
exec(compile(module, src_path, "exec"), namespace)
slips_get_ip_info = namespace["get_ip_info"]


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        assert self.cmd(b"SELECT", b"1") == b"OK"

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.reply()

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        raise RuntimeError(f"unexpected reply {line!r}")


class Cache:
    """redis-py's StrictRedis.hget with decode_responses=True."""

    def __init__(self, port):
        self.resp = Resp(port)

    def hget(self, key, field):
        data = self.resp.cmd(b"HGET", key.encode(), field.encode())
        return None if data is None else data.decode("utf-8", "strict")


class Constants:
    IPS_INFO = "IPsInfo"


class Db:
    def __init__(self, port):
        self.rcache = Cache(port)
        self.constants = Constants()

    def get_ip_info(self, ip, info_type):
        return slips_get_ip_info(self, ip, info_type)


db = Db(port)
for ip in ips:
    try:
        get_ip_info_from_slips(ip, db)
        print("ok")
    except BaseException as e:  # noqa: B036 - any exception ends Slips' module
        print(f"raise {type(e).__name__}")
