"""moto's server with SigV4 query authentication (presigned URLs), which moto lacks when
authentication is on: ``python -m tests.support.moto_presigned -H 127.0.0.1 -p PORT``.

moto 5.2 checks only the ``Authorization`` field (``moto/iam/access_control.py`` reads
``headers["Authorization"]``: a presigned URL gets a 500 from a KeyError). This runs moto's own
WSGI app, wrapped by :class:`QueryAuth`, which does for a request with ``X-Amz-Signature`` in its
query what S3 does ("Authenticating Requests: Using Query Parameters"):

- the access key is looked up in moto's IAM (a deleted key is unknown: 403 InvalidAccessKeyId);
- past ``X-Amz-Date`` + ``X-Amz-Expires`` it is refused (403 AccessDenied, "Request has expired");
- the signature is recomputed with botocore's ``S3SigV4QueryAuth`` from the request as it came (its
  raw path, its raw query without ``X-Amz-Signature``, the fields named in ``X-Amz-SignedHeaders``,
  at its ``X-Amz-Date``); a mismatch is 403 SignatureDoesNotMatch;
- then the query's authentication is taken off and the request is signed again, in the
  ``Authorization`` field with the same key, so moto itself checks that key and its policies.

Requests without ``X-Amz-Signature`` reach moto untouched. Nothing here is a signer of our own:
every signature is botocore's.

Every request is also logged as it came, before any of that: ``GET /_gate/requests`` answers the
log as JSON, one object per request: ``method``, ``target`` (the raw path and query), ``auth``
("query", "header" or "none"), ``key`` (the access key id it names, or "") and ``range`` (its
Range field, or ""). ``/_gate/`` is no bucket (a bucket name cannot start with "_") and is not logged.
"""

from __future__ import annotations

import argparse
import hmac
import json
import threading
import signal
import sys
import time
from calendar import timegm
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from werkzeug.serving import run_simple

__all__ = ["QueryAuth", "main"]

_AUTH_PARAMS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                          "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"})
_MAX_EXPIRES = 604800  # seconds: S3 refuses X-Amz-Expires over 7 days
LOG_PATH = "/_gate/requests"

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _name(piece: str) -> str:
    return unquote(piece.partition("=")[0])


def _refuse(start_response: StartResponse, status: str, code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


class QueryAuth:
    """WSGI middleware: SigV4 query authentication in front of moto (see the module)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._log: list[dict[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        pieces = [p for p in query.split("&") if p]
        query_signed = any(_name(p) == "X-Amz-Signature" for p in pieces)
        params = dict(parse_qsl(query, keep_blank_values=True))
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        if raw_uri.split("?", 1)[0] == LOG_PATH:
            with self._lock:
                body = json.dumps(self._log).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        self._record(environ, raw_uri, params, query_signed)
        if not query_signed:
            return self.app(environ, start_response)
        try:
            akid, day, region, service, _ = params["X-Amz-Credential"].split("/")
            amz_date, expires = params["X-Amz-Date"], int(params["X-Amz-Expires"])
            signed_names = params["X-Amz-SignedHeaders"].split(";")
            signed_at = timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except (KeyError, ValueError):
            return _refuse(start_response, "400 Bad Request", "AuthorizationQueryParametersError",
                           "Query-string authentication requires the X-Amz-* parameters")
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or not 0 < expires <= _MAX_EXPIRES \
                or not amz_date.startswith(day):
            return _refuse(start_response, "400 Bad Request", "AuthorizationQueryParametersError",
                           "Bad X-Amz-Algorithm, X-Amz-Expires or X-Amz-Date")
        credentials = _credentials(akid, region, params.get("X-Amz-Security-Token"))
        if credentials is None:
            return _refuse(start_response, "403 Forbidden", "InvalidAccessKeyId",
                           "The AWS Access Key Id you provided does not exist in our records.")
        if time.time() >= signed_at + expires:
            return _refuse(start_response, "403 Forbidden", "AccessDenied", "Request has expired")

        host = environ.get("HTTP_HOST", "")
        path = raw_uri.split("?", 1)[0]
        unsigned = "&".join(p for p in pieces if _name(p) != "X-Amz-Signature")
        fields = {"host": host}
        for name in signed_names:
            if name != "host":
                fields[name] = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{host}{path}?{unsigned}", headers=fields)
        request.context["timestamp"] = amz_date
        auth = S3SigV4QueryAuth(credentials, service, region, expires=expires)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
            return _refuse(start_response, "403 Forbidden", "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.")

        # Accepted: the same request, authenticated in the Authorization field, for moto to check.
        rest = "&".join(p for p in pieces if _name(p) not in _AUTH_PARAMS)
        target = path + ("?" + rest if rest else "")
        environ = dict(environ, QUERY_STRING=rest, RAW_URI=target, REQUEST_URI=target)
        resigned = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{host}{target}", headers={"host": host})
        S3SigV4Auth(credentials, service, region).add_auth(resigned)
        environ["HTTP_AUTHORIZATION"] = resigned.headers["Authorization"]
        environ["HTTP_X_AMZ_DATE"] = resigned.headers["X-Amz-Date"]
        environ["HTTP_X_AMZ_CONTENT_SHA256"] = resigned.headers["X-Amz-Content-SHA256"]
        if credentials.token:
            environ["HTTP_X_AMZ_SECURITY_TOKEN"] = credentials.token
        return self.app(environ, start_response)


    def _record(self, environ: dict[str, Any], raw_uri: str, params: dict[str, str], query_signed: bool) -> None:
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if query_signed:
            auth, key = "query", params.get("X-Amz-Credential", "").split("/")[0]
        elif authorization:
            auth, key = "header", authorization.partition("Credential=")[2].split("/")[0]
        else:
            auth, key = "none", ""
        entry = {"method": environ["REQUEST_METHOD"], "target": raw_uri, "auth": auth, "key": key,
                 "range": environ.get("HTTP_RANGE", "")}
        with self._lock:
            self._log.append(entry)


def _credentials(akid: str, region: str, token: str | None) -> Any:
    """The botocore credentials of an access key moto's IAM knows (a user's, or an assumed role's
    with its session token), or None."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key
    from moto.iam.models import get_account_id_from
    from moto.utilities.utils import get_partition

    headers = {"X-Amz-Security-Token": token} if token else {}
    try:
        key = create_access_key(get_account_id_from(akid), get_partition(region), akid, headers)
    except CreateAccessKeyFailure:
        return None
    return key.create_credentials()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, QueryAuth(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
