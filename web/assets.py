"""The pages' static files: served compressed, under versioned URLs, cached accordingly.

At start the files of web/static are copied into a directory of this process, where
- every module import between our scripts (`from "./cart.js"`) is rewritten to the imported
  file's versioned URL (`from "/static/js/cart.js?v=<hash of its content>"`), so that a versioned
  script's whole module graph is versioned too (a script's hash covers its imports' hashes);
- every text file gets a gzip sibling (`site.css.gz`), which aiohttp's file response sends to
  browsers that accept gzip (`Content-Encoding: gzip`, `Vary: Accept-Encoding`).
Templates link files with `static_url("css/site.css")` (aiohttp's `url_for` with
`append_version`): `?v=` + the SHA-256 of the served content. A URL whose `v` is that hash is cached
for a year (`immutable`: a new content is a new URL); any other (no `v`, an old or a made-up one) is
revalidated every time (ETag), so that a junk or stale `v` never pins today's content for a year.

Only the files of the build are served, looked up by their exact name: a path that is not one of
them (`..`, a name too long for the file system, a directory, a `.gz` sibling) is a 404 and never
reaches the file system. The gzip sibling goes only to a client that accepts gzip (`gzip;q=0` is a
refusal), and both variants carry `Vary: Accept-Encoding`.
Edits to web/static take effect at the next start.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from .keys import STATIC_BUILD

LONG_CACHE = "public, max-age=31536000, immutable"
SHORT_CACHE = "public, no-cache"
COMPRESSED = {".css", ".js", ".mjs", ".json", ".svg", ".txt", ".html", ".map"}
MIN_COMPRESS_BYTES = 256  # smaller files gain nothing worth a header

# `import … from "./x.js"`, `export … from "./x.js"` and `import "./x.js"` at the start of a line.
MODULE_IMPORT = re.compile(r'^(\s*(?:import|export)\b[^;"\']*?(?:\bfrom\s*)?)"(\.{1,2}/[\w./-]+\.m?js)"',
                           re.MULTILINE)


class StaticBuild:
    """The served copy of web/static and the versioned URL of each of its files."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._dir = tempfile.TemporaryDirectory(prefix="web-static-")  # removed at cleanup (or at exit)
        self.directory = Path(self._dir.name)
        self.resource: web.StaticResource | None = None
        self._urls: dict[str, str] = {}
        self.files: dict[str, Path] = {}  # every served name ("css/site.css") → its file in the copy
        self.versions: dict[str, str] = {}  # its `v` (the SHA-256 of its content, as url_for writes it)
        self.compressed: set[str] = set()  # the names with a gzip sibling

    def url(self, name: str) -> str:
        """The versioned URL of a file, e.g. "/static/js/format.js?v=…"."""
        name = name.lstrip("/")
        if name not in self._urls:
            assert self.resource is not None, "add the static route first"
            self._urls[name] = str(self.resource.url_for(filename=name))
        return self._urls[name]

    def build(self) -> None:
        """Copy every file (modules after the modules they import), then write the gzip siblings."""
        names = sorted(p.relative_to(self.source).as_posix() for p in self.source.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.suffix != ".gz")
        done: set[str] = set()
        for name in names:
            self._copy(name, done, ())
        for name in names:
            self._compress(name)
            self.files[name] = self.directory / name
            self.versions[name] = URL(self.url(name)).query.get(web.StaticResource.VERSION_KEY, "")

    def version_matches(self, name: str, version: str | None) -> bool:
        """Whether `?v=version` is the current content's hash (only then is it cached for a year)."""
        expected = self.versions.get(name)
        return bool(expected) and version == expected

    def _copy(self, name: str, done: set[str], chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise ValueError(f"modules import each other in a cycle: {' -> '.join((*chain, name))}")
        source, target = self.source / name, self.directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in (".js", ".mjs"):
            text = source.read_text(encoding="utf-8")

            def versioned(match: re.Match[str]) -> str:
                imported = (Path(name).parent / match.group(2)).as_posix()
                imported = os.path.normpath(imported).replace(os.sep, "/")
                if not (self.source / imported).is_file():
                    raise ValueError(f"{name} imports {match.group(2)}, which is not in web/static")
                self._copy(imported, done, (*chain, name))
                return f'{match.group(1)}"{self.url(imported)}"'

            target.write_text(MODULE_IMPORT.sub(versioned, text), encoding="utf-8")
            shutil.copystat(source, target)
        else:
            shutil.copy2(source, target)
        done.add(name)

    def _compress(self, name: str) -> None:
        target = self.directory / name
        if target.suffix not in COMPRESSED:
            return
        raw = target.read_bytes()
        if len(raw) < MIN_COMPRESS_BYTES:
            return
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        if len(packed) >= len(raw):
            return
        sibling = target.with_name(target.name + ".gz")
        sibling.write_bytes(packed)
        shutil.copystat(target, sibling)
        self.compressed.add(name)

    def cleanup(self) -> None:
        self._dir.cleanup()


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3): `gzip` or `x-gzip` with a
    weight above 0, or else `*` with a weight above 0. `gzip;q=0` refuses it; no header is identity."""
    named: float | None = None
    star: float | None = None
    for part in header.lower().split(","):
        coding, *params = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if weight != weight:  # NaN
            weight = 0.0
        if coding in ("gzip", "x-gzip"):
            named = weight if named is None else max(named, weight)
        elif coding == "*":
            star = weight
    if named is not None:
        return named > 0
    return star is not None and star > 0


class _BuiltFile(web.FileResponse):
    """A file of the build; its gzip sibling only when the client accepts gzip (aiohttp on its own
    looks for the word "gzip" anywhere in Accept-Encoding, so `gzip;q=0` would get it). Its caching
    headers go on as its headers are prepared, once aiohttp has settled the status (200, 206 or 304:
    a 304 refreshes the cached copy's lifetime too; an error status gets none)."""

    def __init__(self, path: Path, *, gzip_ok: bool, cache_control: str, varies: bool) -> None:
        super().__init__(path)
        self._gzip_ok = gzip_ok
        self._cache_control = cache_control
        self._varies = varies  # a gzip sibling exists: the identity answer varies by Accept-Encoding too

    def _get_file_path_stat_encoding(self, accept_encoding: str) -> tuple[Path | None, os.stat_result, str | None]:
        return super()._get_file_path_stat_encoding("gzip" if self._gzip_ok else "")

    async def _start(self, request: web.BaseRequest) -> AbstractStreamWriter:
        if self.status in (200, 206, 304):
            self.headers[hdrs.CACHE_CONTROL] = self._cache_control
            if self._varies and hdrs.VARY not in self.headers:
                self.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
        return await super()._start(request)


class _StaticFiles(web.StaticResource):
    """aiohttp's static resource (its `url_for` writes the versioned URLs), serving the build's
    files only, by exact name: nothing else under the prefix reaches the file system. Versioned
    URLs of the current build are cached for a year; others briefly (`_BuiltFile`). Only these
    answers carry them: no hook on every answer of the app looks for them."""

    def __init__(self, prefix: str, build: StaticBuild, *, name: str) -> None:
        super().__init__(prefix, build.directory, name=name, append_version=True)
        self.build = build

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["filename"]
        path = self.build.files.get(name)
        if path is None:
            raise web.HTTPNotFound()
        fresh = self.build.version_matches(name, request.query.get(web.StaticResource.VERSION_KEY))
        return _BuiltFile(path, gzip_ok=accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")),
                          cache_control=LONG_CACHE if fresh else SHORT_CACHE, varies=name in self.build.compressed)


def setup_static(app: web.Application, source: Path, prefix: str = "/static/") -> StaticBuild:
    """Serve `source` at `prefix` as above; templates get the `static_url` of a file from
    `app[STATIC_BUILD].url`."""
    # The three overrides above are of aiohttp's internals (3.14): refuse to start rather than serve
    # the files some other way after an upgrade renames them (tests/browser pins their behaviours).
    for cls, method in ((web.StaticResource, "_handle"), (web.FileResponse, "_get_file_path_stat_encoding"),
                        (web.StreamResponse, "_start")):
        if not callable(getattr(cls, method, None)):
            raise RuntimeError(f"aiohttp's {cls.__name__}.{method} is gone: web/assets.py needs updating")
    build = StaticBuild(source)
    resource = _StaticFiles(prefix.rstrip("/"), build, name="static")
    app.router.register_resource(resource)
    build.resource = resource
    build.build()
    app[STATIC_BUILD] = build

    async def remove(_: web.Application) -> None:
        build.cleanup()

    app.on_cleanup.append(remove)
    return build
