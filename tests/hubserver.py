"""A small Hugging Face hub, served over real HTTP on 127.0.0.1 for the tests.

It answers the endpoints huggingface_hub (and so timm) calls to download a file: HEAD/GET
``/{org}/{name}/resolve/{revision}/{filename}`` with ETag, X-Repo-Commit and Content-Length, 404s
carrying X-Error-Code, and ``/api/models/{org}/{name}[/revision/{revision}]``. Repositories hold
several commits; branches point at one. Every request is counted so tests can assert that an
offline load sent none. A repository can be gated (:meth:`FakeHub.gate`): it then answers as the
hub does, 401 without a token and 403 with a token not granted access.

Faults, per repository, for tests of what a user sees when the hub misbehaves:
:meth:`FakeHub.hang` (no answer for a while) and :meth:`FakeHub.corrupt_body` (a body that
differs from the sha256 the ETag advertises, as a broken mirror or proxy would send).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Gate:
    """Tokens granted access; ``error_code`` is the X-Error-Code sent with 401/403 (the hub sends
    "GatedRepo"; None imitates a server that sends a bare status)."""

    tokens: frozenset[str]
    error_code: str | None = "GatedRepo"


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gate: Gate | None = None

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


class FakeHub:
    """Repositories in memory, served by a threaded HTTP server."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self.hanging: dict[str, float] = {}  # repo id -> seconds every request waits
        self.corrupted: set[tuple[str, str]] = set()  # (repo id, filename) served damaged

    def hang(self, repo_id: str, seconds: float) -> None:
        """Make every request to ``repo_id`` wait ``seconds`` before it is answered."""
        self.hanging[repo_id] = seconds

    def corrupt_body(self, repo_id: str, filename: str) -> None:
        """Serve ``filename`` of ``repo_id`` with one byte changed, under the original ETag."""
        self.corrupted.add((repo_id, filename))

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        commit: str | None = None,
    ) -> str:
        """Store ``files`` as a new commit on ``branch`` and return its 40-hex sha (``commit``
        when given, e.g. a real repo's pinned sha)."""
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(repo_id.encode() + str(len(repo.commits)).encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = commit or digest.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        return commit

    def gate(
        self, repo_id: str, tokens: tuple[str, ...] = (), *, error_code: str | None = "GatedRepo"
    ) -> None:
        """Gate ``repo_id``: only requests carrying one of ``tokens`` get its files."""
        self.repos.setdefault(repo_id, Repo()).gate = Gate(frozenset(tokens), error_code)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_POST(self) -> None:
        """Just enough of the upload API for ``HfApi.create_repo`` / ``upload_folder``."""
        path = unquote(urlsplit(self.path).path)
        self.fake_hub.requests.append(("POST", path))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = path.strip("/").split("/")
        if parts == ["api", "repos", "create"]:
            request = json.loads(body or b"{}")
            repo_id = f"{request.get('organization') or 'user'}/{request['name']}"
            self.fake_hub.repos.setdefault(repo_id, Repo())
            return self._json({"url": f"{self.fake_hub.url}/{repo_id}", "name": repo_id})
        if parts == ["api", "validate-yaml"]:  # model-card metadata check before a README upload
            return self._json({"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "preupload":
            files = json.loads(body)["files"]
            modes = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            return self._json({"files": modes})
        if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "commit":
            return self._commit("/".join(parts[2:4]), parts[5], body)
        self._error(404, "RepoNotFound", "no such endpoint", True)

    def _commit(self, repo_id: str, branch: str, body: bytes) -> None:
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"{repo_id} not found", True)
        head = repo.commits.get(repo.refs.get(branch, ""), {})
        files = dict(head)
        for line in body.splitlines():
            item = json.loads(line)
            if item.get("key") == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        commit = self.fake_hub.add_commit(repo_id, files, branch=branch)
        url = f"{self.fake_hub.url}/{repo_id}/commit/{commit}"
        self._json({"commitOid": commit, "commitUrl": url, "pullRequestUrl": None})

    def _json(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, *, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake_hub.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        repo_id = "/".join(parts[2:4] if parts[:2] == ["api", "models"] else parts[:2])
        if self._refused_by_gate(repo_id, send_body):
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            time.sleep(self.fake_hub.hanging.get("/".join(parts[:2]), 0.0))
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
        elif parts[:2] == ["api", "models"] and len(parts) >= 4:
            revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            self._model_info("/".join(parts[2:4]), revision, send_body)
        else:
            self._error(404, "RepoNotFound", "no such endpoint", send_body)

    def _refused_by_gate(self, repo_id: str, send_body: bool) -> bool:
        """Answer 401/403 as the hub does for a gated repo, unless the token is granted."""
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None or repo.gate is None:
            return False
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token in repo.gate.tokens:
            return False
        if token is None:
            status, message = (
                401,
                (
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in."
                ),
            )
        else:
            status, message = (
                403,
                (
                    f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                    f"Visit https://huggingface.co/{repo_id} to ask for access."
                ),
            )
        self._error(status, repo.gate.error_code, message, send_body)
        return True

    def _resolve(self, repo_id: str, revision: str, filename: str, send_body: bool) -> None:
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"{repo_id} not found", send_body)
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"{revision} not found", send_body)
        content = repo.commits[commit].get(filename)
        if content is None:
            return self._error(404, "EntryNotFound", f"{filename} not found", send_body, commit)
        start = self._range_start()
        etag = hashlib.sha256(content).hexdigest()
        if (repo_id, filename) in self.fake_hub.corrupted:
            content = content[:-1] + bytes([content[-1] ^ 0xFF])
        body = content[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _range_start(self) -> int:
        header = self.headers.get("Range", "")
        if header.startswith("bytes=") and header[6:].split("-")[0].isdigit():
            return int(header[6:].split("-")[0])
        return 0

    def _model_info(self, repo_id: str, revision: str, send_body: bool) -> None:
        repo = self.fake_hub.repos.get(repo_id)
        commit = repo.resolve(revision) if repo else None
        if repo is None or commit is None:
            code = "RepoNotFound" if repo is None else "RevisionNotFound"
            return self._error(404, code, f"{repo_id}@{revision} not found", send_body)
        siblings = [{"rfilename": name} for name in sorted(repo.commits[commit])]
        payload = json.dumps({"id": repo_id, "sha": commit, "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def _error(
        self,
        status: int,
        code: str | None,
        message: str,
        send_body: bool,
        commit: str | None = None,
    ) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if send_body:
            self.wfile.write(payload)


_SESSION_HUB: FakeHub | None = None


def session_hub() -> FakeHub:
    """The one hub of this test session (started by the root conftest.py before any import)."""
    global _SESSION_HUB
    if _SESSION_HUB is None:
        _SESSION_HUB = FakeHub()
        _SESSION_HUB.start()
    return _SESSION_HUB
