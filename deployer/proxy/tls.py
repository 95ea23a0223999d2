"""TLS at the edge proxy, as pure functions: which project files a release
carries for it, their checks, and the Caddy config that serves it.

- ``tls: {certificate, key}``: both files ship in the release under
  :data:`RELEASE_DIR` (the key as a secret: 0600, never printed), and the
  switch installs them into the proxy's directory on the host
  (``/opt/deployer-proxy/tls/<app>/<release>/``, root only, the key 0600),
  which Caddy loads (``tls.certificates.load_files``).
- ``tls: acme``: Caddy obtains and renews the certificate itself
  (``tls.certificates.automate`` and an automation policy per app, with the
  app's ``proxy.acme``), by HTTP-01 on ``http_port``. Certificates are kept in
  the proxy's named volume, so a redeploy or a proxy restart finds them and
  never orders again. ``proxy.acme.ca_file`` ships like a certificate and is
  what Caddy trusts for the directory's HTTPS.
- A route with TLS is served by a second server on ``https_port``; on
  ``http_port`` the same match answers 308 to ``https://`` instead.

Everything an app adds is marked with an ``@id`` of ``deployer:<app>:...``
(see :mod:`deployer.proxy.caddy`), so two apps on one proxy never replace
each other's certificates or policies.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from deployer.config.models import AcmeConfig, ProxyConfig, RouteConfig, TlsFiles
from deployer.errors import ConfigError
from deployer.proxy import caddy
from deployer.release_files import CopySpec

#: The Caddy server for routes with TLS (the plain one is :data:`caddy.SERVER`).
TLS_SERVER = "deployer-tls"
#: Where a release carries its TLS files (release-relative).
RELEASE_DIR = ".proxy-tls"
#: The name of ``proxy.acme.ca_file`` in :data:`RELEASE_DIR` and on the host.
ACME_CA = "acme-ca.pem"
CERT_MODE = 0o644


def cert_name(service: str) -> str:
    return f"{service}.crt"


def key_name(service: str) -> str:
    return f"{service}.key"


def _where(i: int, field: str) -> str:
    return f"deployer.yaml: proxy.routes[{i}].tls.{field}"


def _served(proxy: ProxyConfig, services: Collection[str]) -> list[tuple[int, RouteConfig]]:
    return [(i, r) for i, r in enumerate(proxy.routes) if r.service in services]


def release_specs(proxy: ProxyConfig | None, services: Collection[str]) -> list[CopySpec]:
    """The project files a host's release carries for TLS: the certificate
    and key of each route with ``tls: {certificate, key}`` for a service it
    runs, and ``proxy.acme.ca_file`` when one of them uses ACME."""
    if proxy is None:
        return []
    out: list[CopySpec] = []
    acme = False
    for i, r in _served(proxy, services):
        if isinstance(r.tls, TlsFiles):
            out.append(CopySpec(source=r.tls.certificate,
                                dest=f"{RELEASE_DIR}/{cert_name(r.service)}", mode=CERT_MODE,
                                origin=_where(i, "certificate")))
            out.append(CopySpec(source=r.tls.key,
                                dest=f"{RELEASE_DIR}/{key_name(r.service)}", secret=True,
                                origin=_where(i, "key")))
        acme = acme or r.tls == "acme"
    if acme and proxy.acme is not None and proxy.acme.ca_file:
        out.append(CopySpec(source=proxy.acme.ca_file,
                            dest=f"{RELEASE_DIR}/{ACME_CA}", mode=CERT_MODE,
                            origin="deployer.yaml: proxy.acme.ca_file"))
    return out


def shipped(routes: Sequence[RouteConfig], acme: AcmeConfig | None) -> list[tuple[str, int]]:
    """``(name, mode)`` of every file in :data:`RELEASE_DIR` the switch
    installs for ``routes`` (the host's): what :func:`release_specs` shipped."""
    out: list[tuple[str, int]] = []
    for r in routes:
        if isinstance(r.tls, TlsFiles):
            out += [(cert_name(r.service), CERT_MODE), (key_name(r.service), 0o600)]
    if acme is not None and acme.ca_file and any(r.tls == "acme" for r in routes):
        out.append((ACME_CA, CERT_MODE))
    return out


# -- checks (before any host is touched) ----------------------------------------


def check_files(root: Path, proxy: ProxyConfig | None) -> None:
    """Refuse (exit 2) a certificate or key the proxy could not load: not
    PEM, an encrypted key, a key that is not the certificate's, or a
    certificate that does not cover the route's hosts. Caddy would refuse
    it only at the switch, with the new release already started."""
    if proxy is None:
        return
    for i, r in enumerate(proxy.routes):
        if isinstance(r.tls, TlsFiles):
            _check_pair(root, i, r, r.tls)


def _read(root: Path, rel: str, where: str) -> bytes:
    path = root / rel
    if not path.is_file():
        raise ConfigError(f"{where}: {rel!r} not found in the project",
                          f"create it, or fix the path (relative to {root})")
    return path.read_bytes()


def _check_pair(root: Path, i: int, route: RouteConfig, files: TlsFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_where, key_where = _where(i, "certificate"), _where(i, "key")
    cert_pem = _read(root, files.certificate, cert_where)
    key_pem = _read(root, files.key, key_where)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_where}: {files.certificate!r} is not a PEM certificate",
                          "give the chain in PEM (-----BEGIN CERTIFICATE-----), "
                          "the server's certificate first") from None
    # The key's bytes, and cryptography's words about them, are never in a message.
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"{key_where}: {files.key!r} is encrypted",
                          "give the key without a passphrase (the proxy loads it unattended)",
                          ) from None
    except Exception:  # ValueError, UnsupportedAlgorithm: not a key we can read
        raise ConfigError(f"{key_where}: {files.key!r} is not a PEM private key",
                          "give the certificate's private key in PEM "
                          "(-----BEGIN PRIVATE KEY-----)") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(f"{key_where}: {files.key!r} is not the key of {files.certificate!r}",
                          "give the key the certificate was issued for")
    names = cert_names(chain[0])
    missing = [h for h in route.hosts if not covers(names, h)]
    if missing:
        raise ConfigError(
            f"{cert_where}: {files.certificate!r} is not valid for {', '.join(missing)} "
            f"(it names {', '.join(sorted(names)) or 'no DNS name'})",
            "use a certificate whose subject alternative names cover the route's hosts",
        )


def cert_names(cert: Any) -> set[str]:
    """The DNS names a certificate (a ``cryptography`` one) is valid for."""
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {str(n).lower() for n in ext.value.get_values_for_type(x509.DNSName)}


def covers(names: Collection[str], host: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``host``: the name
    itself, or a wildcard for exactly one label (``*.example.com``)."""
    host = host.lower()
    if host in names:
        return True
    parent = host.partition(".")[2]
    return bool(parent) and not host.startswith("*.") and f"*.{parent}" in names


# -- the Caddy config ---------------------------------------------------------


def host_dir(app: str) -> str:
    """The app's TLS files on the host (one folder per release in it)."""
    from deployer.commands.proxy import PROXY_DIR

    return f"{PROXY_DIR}/tls/{app}"


def _container_dir(app: str, release: str) -> str:
    from deployer.commands.proxy import IN_CONTAINER

    return f"{IN_CONTAINER}/tls/{app}/{release}"


def redirect_route(app: str, route: RouteConfig, https_port: int) -> dict[str, Any]:
    """On ``http_port``: what the route serves over HTTPS answers 308 to the
    same host and URI on ``https_port`` (ACME's HTTP-01 requests are answered
    by Caddy before any route)."""
    port = "" if https_port == 443 else f":{https_port}"
    return {
        "@id": f"{caddy.route_id(app, route.service)}:redirect",
        "match": caddy._match(route),
        "handle": [{"handler": "static_response", "status_code": 308,
                    "headers": {"Location": [f"https://{{http.request.host}}{port}"
                                             "{http.request.uri}"]}}],
        "terminal": True,
    }


def issuer(acme: AcmeConfig, ca_file: str | None) -> dict[str, Any]:
    """Caddy's ACME issuer for ``acme``: HTTP-01 only (TLS-ALPN off), so the
    one port a CA must reach is ``http_port``."""
    out: dict[str, Any] = {"module": "acme", "ca": acme.directory, "email": acme.email,
                           "challenges": {"tls-alpn": {"disabled": True}}}
    if ca_file:
        out["trusted_roots_pem_files"] = [ca_file]
    return out


def references_files(cfg: dict[str, Any] | None, app: str) -> bool:
    """Whether a host config loads any TLS file of ``app`` (certificates or
    an ACME CA), i.e. whether the host has some to clean up."""
    tls = ((cfg or {}).get("apps") or {}).get("tls") or {}
    loads = (tls.get("certificates") or {}).get("load_files") or []
    policies = (tls.get("automation") or {}).get("policies") or []
    return any(caddy.owned_by(x, app) for x in [*loads, *policies])


def apply(cfg: dict[str, Any], app: str, proxy: ProxyConfig, routes: Sequence[RouteConfig],
          release: str) -> dict[str, Any]:
    """Make ``cfg`` (from :func:`caddy.merge`, which put all of ``app``'s
    ``routes`` on the plain server) serve ``app``'s routes with TLS on
    :data:`TLS_SERVER`, redirect them on the plain one, and load their
    certificates, from the files of ``release`` or by ACME. Another app's
    TLS routes, certificates and policies are kept as they are."""
    servers = cfg["apps"]["http"]["servers"]
    plain = servers[caddy.SERVER]
    by_id = {caddy.route_id(app, r.service): r for r in routes if r.tls is not None}
    moved = [x for x in plain.get("routes", []) if x.get("@id") in by_id]
    plain["routes"] = sorted(
        [*(x for x in plain.get("routes", []) if x.get("@id") not in by_id),
         *(redirect_route(app, r, proxy.https_port) for r in by_id.values())],
        key=caddy._specificity)
    secure = servers.get(TLS_SERVER) or {}
    merged = sorted([*(x for x in secure.get("routes", []) if not caddy.owned_by(x, app)),
                     *moved], key=caddy._specificity)
    if merged:
        servers[TLS_SERVER] = {
            "listen": [f":{proxy.https_port}"],
            "routes": merged,
            # One policy that matches every handshake: the certificate is
            # chosen by SNI among those the tls app loaded or manages.
            "tls_connection_policies": [{}],
            # Certificates, redirects and policies are all explicit here.
            "automatic_https": {"disable": True},
        }
    else:
        servers.pop(TLS_SERVER, None)
    _tls_app(cfg, app, proxy.acme, routes, _container_dir(app, release))
    return cfg


def _tls_app(cfg: dict[str, Any], app: str, acme: AcmeConfig | None,
             routes: Sequence[RouteConfig], files: str) -> None:
    apps = cfg["apps"]
    tls = apps.get("tls") or {}
    certs = tls.get("certificates") or {}
    automation = tls.get("automation") or {}
    loads = [x for x in certs.get("load_files") or [] if not caddy.owned_by(x, app)]
    loads += [{"@id": f"{caddy.route_id(app, r.service)}:certificate",
               "certificate": f"{files}/{cert_name(r.service)}",
               "key": f"{files}/{key_name(r.service)}"}
              for r in routes if isinstance(r.tls, TlsFiles)]
    policies = automation.get("policies") or []
    mine_before = {s for p in policies if caddy.owned_by(p, app) for s in p.get("subjects", [])}
    others = [p for p in policies if not caddy.owned_by(p, app)]
    hosts = sorted({h for r in routes if r.tls == "acme" for h in r.hosts})
    if hosts and acme is not None:
        ca_file = f"{files}/{ACME_CA}" if acme.ca_file else None
        others.append({"@id": f"{caddy.ID_PREFIX}{app}:acme", "subjects": hosts,
                       "issuers": [issuer(acme, ca_file)]})
    theirs = {s for p in others if not caddy.owned_by(p, app) for s in p.get("subjects", [])}
    automate = sorted((set(certs.get("automate") or []) - mine_before) | theirs | set(hosts))
    _put(certs, "load_files", loads)
    _put(certs, "automate", automate)
    _put(automation, "policies", others)
    _put(tls, "certificates", certs)
    _put(tls, "automation", automation)
    _put(apps, "tls", tls)


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[key] = value``, or no ``key`` at all when ``value`` is empty (a
    config without TLS stays byte for byte what it was)."""
    if value:
        d[key] = value
    else:
        d.pop(key, None)
