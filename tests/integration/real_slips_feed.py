"""Plays one of Slips' own detection modules against a running Slips.

Run with the Python of Slips' venv, with cwd = the Slips tree that runs
(Slips' ConfigParser reads config/slips.yaml from cwd), inside that Slips'
network namespace (its Redis is 127.0.0.1:<port> there):

    python real_slips_feed.py evidence PORT ATTACKER VICTIM THREAT_LEVEL CONFIDENCE
        DBManager.set_evidence(Evidence(...)), exactly as a detection module
        sets one (the shape of the threat-intelligence module's "connection
        to a blacklisted IP"); Slips' evidence handler then shares it with
        the peers (report_to_peers) and records the IP's threat level.
    python real_slips_feed.py request PORT IP PROFILE_IP
        publishes p2p_data_request with the dict Slips' profiler builds for
        a flow's IP, plus the cache_age and ip keys the P2P module expects.
    python real_slips_feed.py opinion TRUSTDB IP
        prints, as JSON, the opinion_cache row of the trust database for IP
        (or null) and the peer ids of the stored reports about IP.

It imports Slips' classes from the tree and copies no Slips code.
"""

import atexit
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time


def slips_argv():
    # Slips' ConfigParser parses sys.argv: look like the Slips that runs
    return ["slips.py", "-i", "veth0", "-g", "zeek"]


def db_manager(port):
    sys.path.insert(0, os.getcwd())
    sys.argv = slips_argv()
    from slips_files.common.parsers.config_parser import ConfigParser
    from slips_files.core.database.database_manager import DBManager

    # a process other than Slips' main one never flushes the database; its
    # own files (a Redis config copy) go to a scratch directory, removed at
    # exit
    scratch = tempfile.mkdtemp(prefix="pigeon-feed-")
    atexit.register(shutil.rmtree, scratch, True)
    return DBManager(
        None,
        scratch,
        port,
        ConfigParser(),
        main_pid=-1,
        start_sqlite=False,
        start_redis_server=False,
    )


def evidence(port, attacker, victim, threat_level, confidence):
    db = db_manager(port)
    from slips_files.core.structures.evidence import (
        Attacker,
        Direction,
        Evidence,
        EvidenceType,
        IoCType,
        ProfileID,
        ThreatLevel,
        TimeWindow,
        Victim,
    )

    now = time.time()
    ev = Evidence(
        evidence_type=EvidenceType.THREAT_INTELLIGENCE_TO_BLACKLISTED_IP,
        attacker=Attacker(
            direction=Direction.DST, ioc_type=IoCType.IP, value=attacker
        ),
        victim=Victim(
            direction=Direction.SRC, ioc_type=IoCType.IP, value=victim
        ),
        threat_level=ThreatLevel[threat_level.upper()],
        confidence=float(confidence),
        description=f"connection to blacklisted IP {attacker} from {victim} "
        "(pigeon's real-Slips test)",
        profile=ProfileID(ip=attacker),
        timewindow=TimeWindow(number=1),
        uid=[f"pigeon{int(now * 1000)}"],
        timestamp=str(now),
    )
    print(json.dumps({"evidence_set": bool(db.set_evidence(ev))}))


def request(port, ip, profile_ip):
    db = db_manager(port)
    now = time.time()
    data = {
        "to_lookup": ip,
        "profileid": f"profile_{profile_ip}",
        "twid": "timewindow1",
        "proto": "TCP",
        "ip_state": "dstip",
        "stime": now,
        "uid": f"pigeon{int(now * 1000)}",
        "daddr": ip,
        "cache_age": 1000,
        "ip": ip,
    }
    db.publish("p2p_data_request", json.dumps(data))
    print(json.dumps({"published": data}))


def opinion(trustdb, ip):
    con = sqlite3.connect(f"file:{trustdb}?mode=ro", uri=True, timeout=5)
    row = con.execute(
        "SELECT score, confidence, update_time FROM opinion_cache"
        " WHERE reported_key = ?",
        (ip,),
    ).fetchone()
    reporters = [
        r[0]
        for r in con.execute(
            "SELECT reporter_peerid FROM reports WHERE reported_key = ?",
            (ip,),
        )
    ]
    print(
        json.dumps(
            {
                "opinion": None
                if row is None
                else {"score": row[0], "confidence": row[1], "time": row[2]},
                "reports_from": reporters,
            }
        )
    )


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    cmd, rest = args[0], args[1:]
    if cmd == "evidence" and len(rest) == 5:
        evidence(int(rest[0]), rest[1], rest[2], rest[3], rest[4])
    elif cmd == "request" and len(rest) == 3:
        request(int(rest[0]), rest[1], rest[2])
    elif cmd == "opinion" and len(rest) == 2:
        opinion(rest[0], rest[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
