#!/usr/bin/env python3
"""The stack's application: commits a row through the entry point every 50 ms and logs, as one
JSON line each, when its writes stop and when they come back, with the downtime it saw.

Every attempt (connect included) has a deadline (WRITER_DEADLINE, default 1 s), kept on the
client with a non-blocking connection, so a frozen HAProxy or primary cannot hold it. The
downtime is from the last commit before the outage to the first one after: what an
application committing every 50 ms would call its outage, comparable with the exporter's write
downtime. Settings come from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).
"""

import json
import os
import select
import sys
import time

import psycopg2
import psycopg2.extensions

INTERVAL = float(os.environ.get("WRITER_INTERVAL", "0.05"))
DEADLINE = float(os.environ.get("WRITER_DEADLINE", "1.0"))


class Timeout(Exception):
    pass


def log(**fields):
    fields["at"] = round(time.time(), 3)
    print(json.dumps(fields, sort_keys=True), flush=True)


def wait(conn, deadline):
    """Drives a non-blocking connection until its operation is done, or raises Timeout."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"no answer within {DEADLINE}s")
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            select.select([fd], [], [], left)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [fd], [], left)


def connect(deadline):
    conn = psycopg2.connect("", async_=1, application_name="pgha-writer")
    try:
        wait(conn, deadline)
        run(conn, "create table if not exists writer_log (id bigserial primary key, at timestamptz not null default now())", deadline)
    except BaseException:
        conn.close()
        raise
    return conn


def run(conn, sql, deadline):
    cur = conn.cursor()
    cur.execute(sql)
    wait(conn, deadline)


def attempt(conn):
    """One commit (an async connection autocommits each statement); returns the connection to
    keep, or raises with it closed."""
    deadline = time.monotonic() + DEADLINE
    if conn is None:
        conn = connect(deadline)
    try:
        run(conn, "insert into writer_log default values", deadline)
    except BaseException:
        conn.close()
        raise
    return conn


def main():
    log(event="writer_started", interval=INTERVAL, deadline=DEADLINE, host=os.environ.get("PGHOST"))
    conn, last_ok, down_since, reason = None, None, None, None
    while True:
        started = time.monotonic()
        try:
            conn = attempt(conn)
            now = time.time()
            if down_since is not None:
                log(event="writes_back", downtime=round(now - (last_ok or down_since), 3), reason=reason,
                    last_commit=last_ok, first_failure=down_since)
                down_since = None
            last_ok = now
        except (psycopg2.Error, Timeout, OSError) as e:
            conn = None
            if down_since is None:
                down_since, reason = time.time(), type(e).__name__ + ": " + (str(e).strip().splitlines() or [""])[0][:200]
                log(event="writes_failing", reason=reason, last_commit=last_ok)
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
