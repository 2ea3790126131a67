#!/usr/bin/env python3
"""ClickHouse HTTP stand-in over one embedded chdb session.

TEST INFRASTRUCTURE ONLY. Never ship or deploy this. It exists because Debian's
clickhouse-server (18.16) is too old for the Langfuse v3 schema, and chdb carries a
current ClickHouse engine as a library but has no network server. The operator's own
code must keep speaking plain ClickHouse HTTP through the `clickhouse` crate so that it
works unchanged against a real server; this file only answers that protocol in tests.

What it implements (enough for clickhouse crate 0.15 and curl):
  * GET/HEAD /ping and GET / without a query  -> "Ok.\\n"
  * SQL from the `query` URL parameter and/or the request body, joined with "\\n" like the
    real server; `multipart/form-data` bodies (the crate uses them for `param_*`).
  * `INSERT ... FORMAT <fmt>` in the `query` parameter plus a body of data in any format
    chdb reads (RowBinary, RowBinaryWithNamesAndTypes, JSONEachRow, ...), streamed into
    chdb's insert API; `decompress=1` bodies in ClickHouse native LZ4 framing (the crate's
    default for inserts) and `Content-Encoding: gzip|deflate`.
  * `default_format`, `database`, `param_*`; other URL parameters that are ClickHouse
    settings are applied for that request only, unknown ones are ignored.
  * Auth: basic auth, X-ClickHouse-User/X-ClickHouse-Key, or user/password parameters,
    checked against $LFU_CHDB_HTTP_USER (default "default") / $LFU_CHDB_HTTP_PASSWORD.
  * Errors: non-200 with the ClickHouse message as body and X-ClickHouse-Exception-Code.
  * Multi-statement requests are rejected, as the real HTTP interface does.

Not implemented: sessions (`session_id`), response compression (`compress=1`,
Accept-Encoding is ignored, which the real server also does unless
enable_http_compression=1), external tables, progress headers. A `SET` sent as a query
persists in the shared chdb session, unlike the stateless real HTTP interface.
"""

import argparse
import base64
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
from chdb import session as chdb_session

# URL parameters of the HTTP interface that are not settings (or that we must not apply).
HTTP_ONLY_PARAMS = {
    "query", "database", "default_format", "user", "password", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "quota_key", "stacktrace", "role", "client_protocol_version",
    "http_response_headers", "close_session",
}
# Real settings we deliberately ignore: chdb inserts are synchronous anyway (same visible
# result as async_insert=1 + wait_for_async_insert=1), and readonly would lock the shared
# session so we could not restore its settings afterwards.
IGNORED_SETTINGS_RE = re.compile(r"^(readonly|async_insert.*|wait_for_async_insert.*)$")

INSERT_WITH_FORMAT_RE = re.compile(
    r"^\s*(?P<head>INSERT\s+INTO\s+.*?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
STARTS_WITH_INSERT_RE = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
ERROR_CODE_RE = re.compile(r"Code:\s*(\d+)")
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LZ4_METHOD, ZSTD_METHOD, NONE_METHOD = 0x82, 0x90, 0x02

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}


class ClickHouseError(Exception):
    """An error reported to the client the way ClickHouse does."""

    def __init__(self, message, code=None, status=500):
        super().__init__(message)
        self.message = message
        if code is None:
            m = ERROR_CODE_RE.search(message)
            code = int(m.group(1)) if m else 1001  # 1001 = STD_EXCEPTION
        self.code = code
        self.status = status


def has_multiple_statements(sql):
    """True if non-comment text follows a top-level ';' (quotes and comments skipped)."""
    i, n, after_semicolon = 0, len(sql), False
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if sql.startswith("--", i) or (c == "#" and sql[i + 1:i + 2] in (" ", "!")):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if after_semicolon:
            return True
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
            i += 1
            continue
        if c == ";":
            after_semicolon = True
        i += 1
    return False


def decode_native_compressed(buf):
    """Undo ClickHouse's native compression framing (sent with `decompress=1`).

    Each block: 16-byte CityHash128 checksum (not verified here), 1-byte method,
    u32 LE size of header+payload, u32 LE uncompressed size, payload.
    """
    out, i, n = bytearray(), 0, len(buf)
    while i < n:
        if n - i < 25:
            raise ClickHouseError("Code: 271. DB::Exception: Truncated compressed block. (CANNOT_DECOMPRESS)")
        method = buf[i + 16]
        csize = int.from_bytes(buf[i + 17:i + 21], "little")
        dsize = int.from_bytes(buf[i + 21:i + 25], "little")
        payload = buf[i + 25:i + 16 + csize]
        if csize < 9 or len(payload) != csize - 9:
            raise ClickHouseError("Code: 271. DB::Exception: Bad compressed block size. (CANNOT_DECOMPRESS)")
        if method == LZ4_METHOD:
            out += lz4.block.decompress(payload, uncompressed_size=dsize)
        elif method == NONE_METHOD:
            out += payload
        else:
            raise ClickHouseError(
                f"Code: 271. DB::Exception: Compression method 0x{method:02x} is not supported by "
                "the test stand-in (only LZ4 and NONE). (CANNOT_DECOMPRESS)")
        i += 16 + csize
    return bytes(out)


def parse_multipart(body, content_type):
    """Return the form fields of a multipart/form-data body as {name: str}."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ClickHouseError("Code: 27. DB::Exception: multipart body without boundary. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
    delim = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        disp = re.search(rb'name="([^"]*)"', head)
        if disp is None:
            continue
        if b"filename=" in head:
            raise ClickHouseError("Code: 48. DB::Exception: External tables are not supported by the test stand-in. (NOT_IMPLEMENTED)")
        fields[disp.group(1).decode()] = value.decode("utf-8")
    return fields


# TEST KNOB: a database holding this table (one String column `v`) answers `SELECT version()`
# with its value, so a test can play an older ClickHouse (e.g. 25.3) without touching others.
REPORTED_VERSION_TABLE = "__lfu_test_reported_version"
# Statements after which the engine's kept state (database, settings, the version knob's
# presence) is read again.
STATE_CHANGING_RE = re.compile(
    r"^(?:\s|--[^\n]*\n|/\*.*?\*/)*(SET|USE|CREATE|DROP|UNDROP|RENAME|EXCHANGE|ATTACH|DETACH|ALTER)\b",
    re.IGNORECASE | re.DOTALL)
# TEST KNOB: a database holding this table (one String column `t`) refuses, as a server without
# the grant would (Code 497, ACCESS_DENIED), every query naming `system.<t>` for a listed `t`:
# a test plays a ClickHouse user without the system-table grants Langfuse v4 needs. Access
# control is a server's, which cannot run here; chdb's session has every privilege.
DENIED_SYSTEM_TABLES = "__lfu_test_denied_system_tables"
SYSTEM_TABLE_RE = re.compile(r"\bsystem\.`?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
VERSION_QUERY_RE = re.compile(r"^\s*SELECT\s+version\(\)\s*(?P<fmt>FORMAT\s+\w+)?\s*;?\s*$", re.IGNORECASE)


def sql_literal(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """One chdb session, used by one request at a time."""

    def __init__(self, path, compatibility):
        self.lock = threading.Lock()
        self.session = chdb_session.Session(path)
        # Server parity: chdb (clickhouse-local) enables implicit SELECT; a server does not.
        self._q("SET implicit_select = 0")
        if compatibility:
            # Make setting defaults those of the ClickHouse release Langfuse 3.29 is run with.
            # Notably 26.8 changed input_format_read_datetime_number_as_raw_value (1 -> 0).
            self._q(f"SET compatibility = {sql_literal(compatibility)}")
        # Each request used to read its settings' values, select its database and look for the
        # version knob with queries of their own (10-15 ms each in chdb): kept here instead, and
        # dropped when a client's statement could change them.
        self._load_settings()
        self.database = None
        self.knob = {}
        # Bumped by every invalidation: a knob read that raced one is not kept.
        self.generation = 0

    def _load_settings(self):
        rows = self._q("SELECT name, value FROM system.settings", "JSONEachRow").bytes().decode()
        self.values = {r["name"]: r["value"] for r in map(json.loads, rows.splitlines())}
        self.settings = set(self.values)

    def _forget(self, sql):
        """After a client's statement: what it may have changed is read again when needed."""
        match = STATE_CHANGING_RE.match(sql or "")
        if match:
            self.database = None
            self.knob = {}
            self.generation += 1
            if match.group(1).upper() == "SET":
                self._load_settings()

    def _q(self, sql, fmt="TabSeparated", params=None):
        try:
            return self.session.query(sql, fmt, params=params or None)
        except Exception as e:  # chdb raises ChdbError/RuntimeError with the CH message
            raise ClickHouseError(str(e).strip()) from None

    def run(self, sql, fmt, database, settings, params, insert_data=None):
        """Run one request. insert_data=(head, fmt, bytes) uses the streaming insert API."""
        with self.lock:
            if database != self.database:
                self.database = None
                self._q(f"USE {database}" if re.match(r"^[A-Za-z0-9_]+$", database)
                        else f"USE `{database.replace('`', '')}`")
                self.database = database
            saved = {}
            try:
                for k, v in settings.items():
                    if self.values.get(k) == v:
                        continue
                    self._q(f"SET {k} = {sql_literal(v)}")
                    saved[k] = self.values.get(k)
                    self.values[k] = v
                t0 = time.monotonic()
                if insert_data is not None:
                    head, in_fmt, data = insert_data
                    ins = self.session.send_insert(head, in_fmt)
                    try:
                        ins.append(data)
                        r = ins.finish()
                    except Exception as e:
                        ins.cancel()
                        msg = str(e).strip()
                        msg = re.sub(r"^Streaming insert (append|finish) failed:\s*", "", msg)
                        raise ClickHouseError(msg) from None
                    return b"", {"written_rows": r.rows_written, "written_bytes": r.bytes_written,
                                 "elapsed_ns": int((time.monotonic() - t0) * 1e9)}
                res = self._q(sql, fmt, params)
                if res.has_error():
                    raise ClickHouseError(res.error_message())
                body = res.bytes()
                return body, {"read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
                              "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
                              "elapsed_ns": int(res.elapsed() * 1e9)}
            finally:
                self._forget(sql)
                for k, v in saved.items():
                    try:
                        if v is None:
                            raise ClickHouseError(f"no value of {k} was known to restore")
                        self._q(f"SET {k} = {sql_literal(v)}")
                        self.values[k] = v
                    except ClickHouseError as e:
                        log(f"warning: could not restore setting {k}: {e.message}")
                        # What the session holds now is read back, not assumed.
                        try:
                            self._load_settings()
                        except ClickHouseError:
                            self.values = {}

    def reported_version(self, database):
        """Whether `database` holds the test knob table that overrides `SELECT version()`."""
        with self.lock:
            if database in self.knob:
                return self.knob[database]
            generation = self.generation
        out, _ = self.run(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = "
            + sql_literal(REPORTED_VERSION_TABLE), "TabSeparated", database, {}, {})
        present = out.strip() not in (b"", b"0")
        with self.lock:
            if self.generation == generation:
                self.knob[database] = present
        return present

    def denied_system_tables(self, database):
        """The system tables the denial knob of `database` lists (empty without the knob)."""
        key = (DENIED_SYSTEM_TABLES, database)
        with self.lock:
            if key in self.knob:
                return self.knob[key]
            generation = self.generation
        out, _ = self.run(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = "
            + sql_literal(DENIED_SYSTEM_TABLES), "TabSeparated", database, {}, {})
        denied = set()
        if out.strip() not in (b"", b"0"):
            rows, _ = self.run(f"SELECT t FROM {DENIED_SYSTEM_TABLES}", "TabSeparated", database, {}, {})
            denied = {r.strip().lower() for r in rows.decode().splitlines() if r.strip()}
        with self.lock:
            if self.generation == generation:
                self.knob[key] = denied
        return denied

    def close(self):
        with self.lock:
            self.session.close()


def log(msg):
    sys.stderr.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + msg + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the crate's hyper pool expects
    server_version = "chdb-http-test-stand-in"
    engine = None  # set in main()
    user = "default"
    password = ""

    def log_message(self, fmt, *args):  # quieter than the default; no auth data in logs
        pass

    # ---- plumbing -------------------------------------------------------------------------
    def _send(self, status, body, headers=None):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "text/plain; charset=UTF-8")
        headers["Content-Length"] = str(len(body))
        headers["X-ClickHouse-Server-Display-Name"] = "chdb-test-stand-in"
        if self.close_connection:
            headers["Connection"] = "close"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, err):
        body = (err.message.rstrip("\n") + "\n").encode("utf-8", "replace")
        self._send(err.status, body, {"X-ClickHouse-Exception-Code": str(err.code)})

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        enc = self.headers.get("Content-Encoding", "").lower().strip()
        if enc in ("gzip", "deflate"):
            body = zlib.decompress(body, 47)  # 47: auto-detect gzip or zlib header
        elif enc not in ("", "identity"):
            raise ClickHouseError(f"Code: 48. DB::Exception: Content-Encoding {enc} is not supported "
                                  "by the test stand-in. (NOT_IMPLEMENTED)")
        return body

    def _check_auth(self, params):
        user = self.headers.get("X-ClickHouse-User")
        password = self.headers.get("X-ClickHouse-Key")
        auth = self.headers.get("Authorization", "")
        if user is None and auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except Exception:
                user = password = None
        if user is None:
            user = params.get("user", "default")
            password = params.get("password", password)
        ok = hmac.compare_digest((user or "").encode(), self.user.encode()) and \
            hmac.compare_digest((password or "").encode(), self.password.encode())
        if not ok:
            raise ClickHouseError(
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)", status=403)

    # ---- HTTP verbs -----------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._handle(read_body=False)

    def do_POST(self):
        self._handle(read_body=True)

    def _handle(self, read_body):
        started = time.monotonic()
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        status_note = "ok"
        self.sql_for_log = params.get("query", "")
        try:
            if url.path == "/ping" or (url.path == "/" and not read_body and "query" not in params):
                if read_body:
                    self._read_body()
                self._send(200, b"Ok.\n")
                return
            if url.path != "/":
                self.close_connection = True
                raise ClickHouseError(f"Code: 1001. DB::Exception: There is no handle {url.path}", status=404)
            try:
                self._check_auth(params)
            except ClickHouseError:
                self.close_connection = True  # body left unread
                raise
            body = self._read_body() if read_body else b""
            ctype = self.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/form-data"):
                params.update(parse_multipart(body, ctype))
                body = b""
            if params.get("compress") == "1":
                raise ClickHouseError("Code: 48. DB::Exception: compress=1 (compressed responses) is not "
                                      "supported by the test stand-in. (NOT_IMPLEMENTED)")
            if params.get("decompress") == "1" and body:
                body = decode_native_compressed(body)
            self._run(params, body)
        except ClickHouseError as e:
            status_note = f"error {e.code}"
            self._send_error(e)
        except Exception as e:  # keep the server alive, report like the server would
            status_note = f"internal {type(e).__name__}"
            self.close_connection = True
            self._send_error(ClickHouseError(f"Code: 1001. DB::Exception: {type(e).__name__}: {e}"))
        finally:
            q = self.sql_for_log[:160].replace("\n", " ")
            log(f"{self.command} {url.path} [{status_note}] {time.monotonic() - started:.3f}s q={q!r}")

    def _run(self, params, body):
        query_param = params.get("query", "")
        fmt = params.get("default_format") or "TabSeparated"
        database = params.get("database") or "default"
        qparams = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        settings = {}
        for k, v in params.items():
            if k in HTTP_ONLY_PARAMS or k.startswith("param_") or IGNORED_SETTINGS_RE.match(k):
                continue
            if SETTING_NAME_RE.match(k) and k in self.engine.settings:
                settings[k] = v
            # else: not a setting chdb knows -> ignored (the real server would reject it)

        insert = INSERT_WITH_FORMAT_RE.match(query_param) if body else None
        if insert:
            # Data in the body, possibly binary: stream it through chdb's insert API.
            data = (insert.group("head"), insert.group("fmt"), body)
            out, summary = self.engine.run(None, fmt, database, settings, qparams, insert_data=data)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ClickHouseError(
                    "Code: 27. DB::Exception: Request body is not UTF-8. Binary data must follow "
                    "`INSERT ... FORMAT <fmt>` given in the `query` URL parameter (test stand-in). "
                    "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)") from None
            sql = query_param + ("\n" if query_param and text else "") + text
            self.sql_for_log = sql
            if not sql.strip():
                raise ClickHouseError("Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            if not STARTS_WITH_INSERT_RE.match(sql) and has_multiple_statements(sql):
                raise ClickHouseError("Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed). "
                                      "(SYNTAX_ERROR)")
            named = {m.lower() for m in SYSTEM_TABLE_RE.findall(sql)}
            refused = sorted(named & self.engine.denied_system_tables(database)) if named else []
            if refused:
                raise ClickHouseError(
                    f"Code: 497. DB::Exception: {self.user}: Not enough privileges. To execute this query, "
                    f"it's necessary to have the grant SELECT ON system.{refused[0]}. (ACCESS_DENIED)")
            version_query = VERSION_QUERY_RE.match(sql)
            if version_query and self.engine.reported_version(database):
                # Test knob: a test plays an older ClickHouse for its own database only.
                sql = f"SELECT v FROM {REPORTED_VERSION_TABLE} LIMIT 1 {version_query.group('fmt') or ''}"
            out, summary = self.engine.run(sql, fmt, database, settings, qparams)
        summary = {k: str(v) for k, v in summary.items()}
        headers = {
            "Content-Type": CONTENT_TYPES.get(fmt, "application/octet-stream"),
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
        }
        self._send(200, out, headers)


def main():
    ap = argparse.ArgumentParser(description="TEST-ONLY ClickHouse HTTP stand-in over chdb")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=28123)
    ap.add_argument("--data", required=True, help="chdb session directory (MergeTree data)")
    ap.add_argument("--pidfile", help="written after the socket is bound")
    ap.add_argument("--compatibility", default=os.environ.get("LFU_CHDB_COMPATIBILITY", "25.3"),
                    help="ClickHouse `compatibility` setting for the session ('' to disable)")
    args = ap.parse_args()

    Handler.user = os.environ.get("LFU_CHDB_HTTP_USER", "default")
    Handler.password = os.environ.get("LFU_CHDB_HTTP_PASSWORD", "")
    os.makedirs(args.data, exist_ok=True)
    Handler.engine = Engine(args.data, args.compatibility)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(args.pidfile + ".tmp", args.pidfile)

    def stop(signum, _frame):
        log(f"signal {signum}, shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"chdb {chdb.__version__} test stand-in listening on http://{args.host}:{args.port} "
        f"data={args.data} compatibility={args.compatibility or '-'}")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        Handler.engine.close()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
        log("stopped")


if __name__ == "__main__":
    main()
