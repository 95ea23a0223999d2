"""The compose -> stack conversion of ``target: swarm``: exact output for each
input (configs, secrets, bind mounts rewritten, refused data binds, the
injected update policy, one-shots taken out as jobs)."""

from __future__ import annotations

import textwrap

import pytest

from deployer.errors import ConfigError
from deployer.swarm.stack import (
    FileInfo,
    Job,
    SwarmObject,
    by_digest,
    convert,
    healthcheck_window,
    object_name,
    parse_duration,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64


def conv(text: str, files: dict[str, FileInfo] | None = None, **kw: object):
    return convert(textwrap.dedent(text), app="shop", files=files or {}, where="compose.yaml",
                   **kw)  # type: ignore[arg-type]


def out(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_update_policy_injected_start_first_without_healthcheck() -> None:
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
    """)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            deploy:
              update_config:
                parallelism: 1
                order: start-first
                failure_action: rollback
                monitor: 5s
                max_failure_ratio: 0
    """)
    assert s.services == ["web"] and s.objects == [] and s.jobs == []
    assert s.networks == ["shop_default"]


def test_host_mode_ports_stop_first_and_monitor_covers_the_healthcheck_window() -> None:
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
            ports:
              - {target: 8000, published: "8000", mode: host}
            healthcheck:
              test: [CMD, "true"]
              interval: 2s
              timeout: 3s
              retries: 3
              start_period: 4s
              start_interval: 1s
            deploy:
              mode: global
    """)
    # 4s + 3 * (2s + 3s) = 19s; start_interval is not in the stack format
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            ports:
            - target: 8000
              published: 8000
              mode: host
            healthcheck:
              test:
              - CMD
              - 'true'
              interval: 2s
              timeout: 3s
              retries: 3
              start_period: 4s
            deploy:
              mode: global
              update_config:
                parallelism: 1
                order: stop-first
                failure_action: rollback
                monitor: 19s
                max_failure_ratio: 0
    """)


def test_an_update_policy_the_file_sets_is_left_alone() -> None:
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
            deploy:
              update_config: {parallelism: 2, order: stop-first}
    """)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            deploy:
              update_config:
                parallelism: 2
                order: stop-first
    """)


def test_bind_mounts_of_uploaded_files_become_config_and_secret_mounts() -> None:
    files = {"nginx.conf": FileInfo(A, 0o644), "db.key": FileInfo(B, 0o600, secret=True)}
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
            volumes:
              - ./nginx.conf:/etc/nginx/nginx.conf:ro
              - {type: bind, source: ./db.key, target: /run/db.key}
              - /var/run/docker.sock:/var/run/docker.sock
              - cache:/cache
            deploy:
              update_config: {parallelism: 1}
        volumes:
          cache: {}
    """, files)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            volumes:
            - /var/run/docker.sock:/var/run/docker.sock
            - cache:/cache
            deploy:
              update_config:
                parallelism: 1
            configs:
            - source: nginx.conf
              target: /etc/nginx/nginx.conf
              mode: 420
            secrets:
            - source: db.key
              target: /run/db.key
              mode: 384
        volumes:
          cache: {}
        configs:
          nginx.conf:
            file: ./nginx.conf
            name: shop_nginx.conf_aaaaaaaaaaaa
        secrets:
          db.key:
            file: ./db.key
            name: shop_db.key_bbbbbbbbbbbb
    """)
    assert s.objects == [
        SwarmObject("config", "nginx.conf", "shop_nginx.conf_aaaaaaaaaaaa", "nginx.conf"),
        SwarmObject("secret", "db.key", "shop_db.key_bbbbbbbbbbbb", "db.key"),
    ]
    assert s.objects_text() == ("config shop_nginx.conf_aaaaaaaaaaaa\n"
                                "secret shop_db.key_bbbbbbbbbbbb\n")


def test_an_uploaded_directory_becomes_one_config_per_file() -> None:
    files = {"static/index.html": FileInfo(A, 0o644), "static/css/site.css": FileInfo(B, 0o640),
             "other.txt": FileInfo(C, 0o644)}
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
            volumes: ["./static:/srv/static"]
            deploy: {update_config: {parallelism: 1}}
    """, files)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            deploy:
              update_config:
                parallelism: 1
            configs:
            - source: static_css_site.css
              target: /srv/static/css/site.css
              mode: 416
            - source: static_index.html
              target: /srv/static/index.html
              mode: 420
        configs:
          static_css_site.css:
            file: ./static/css/site.css
            name: shop_static_css_site.css_bbbbbbbbbbbb
          static_index.html:
            file: ./static/index.html
            name: shop_static_index.html_aaaaaaaaaaaa
    """)


def test_top_level_configs_and_secrets_from_files_are_named_by_content() -> None:
    files = {"conf/app.conf": FileInfo(A, 0o644), "pw.txt": FileInfo(B, 0o600, secret=True)}
    s = conv("""
        services:
          web:
            image: reg/shop/web:1
            configs: [{source: app, target: /etc/app.conf}]
            secrets: [pw]
            deploy: {update_config: {parallelism: 1}}
        configs:
          app: {file: ./conf/app.conf}
          ext: {external: true}
        secrets:
          pw: {file: ./pw.txt}
    """, files)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/shop/web:1
            configs:
            - source: app
              target: /etc/app.conf
            secrets:
            - pw
            deploy:
              update_config:
                parallelism: 1
        configs:
          app:
            file: ./conf/app.conf
            name: shop_app_aaaaaaaaaaaa
          ext:
            external: true
        secrets:
          pw:
            file: ./pw.txt
            name: shop_pw_bbbbbbbbbbbb
    """)
    assert [o.name for o in s.objects] == ["shop_app_aaaaaaaaaaaa", "shop_pw_bbbbbbbbbbbb"]


def test_a_changed_file_is_a_new_config_name() -> None:
    text = """
        services:
          web: {image: x, volumes: ["./app.conf:/etc/app.conf"]}
    """
    one = conv(text, {"app.conf": FileInfo(A, 0o644)})
    two = conv(text, {"app.conf": FileInfo(B, 0o644)})
    assert one.objects[0].name == "shop_app.conf_aaaaaaaaaaaa"
    assert two.objects[0].name == "shop_app.conf_bbbbbbbbbbbb"


def test_a_relative_data_bind_is_refused_suggesting_a_volume_and_a_constraint() -> None:
    # server_compose has already pointed the data bind at <deploy_dir>/shared
    with pytest.raises(ConfigError) as e:
        conv("""
            services:
              db:
                image: postgres:16
                volumes: ["/opt/shop/shared/db-data:/var/lib/postgresql/data"]
        """, shared_prefix="/opt/shop/shared")
    assert e.value.message == (
        "compose.yaml: service db: volumes[0]: bind mount source './db-data' is data; with "
        "target: swarm one stack serves every node, and a directory on one node is not there "
        "on another")
    assert e.value.hint == (
        "use a named volume (volumes: [db-data:/path], kept on the node that runs the task) "
        "and pin the service to that node with deploy.placement.constraints "
        "(e.g. [node.hostname == db-1])")


def test_a_relative_bind_of_nothing_uploaded_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"volumes\[0\]: bind mount source './cache' is data"):
        conv("""
            services:
              web: {image: x, volumes: ["./cache:/cache"]}
        """)


def test_one_shots_leave_the_stack_as_jobs_with_their_networks() -> None:
    s = conv("""
        services:
          migrate:
            image: reg/shop/web:1
            command: [flask, db, upgrade]
            networks: [back]
            restart: "no"
          web:
            image: reg/shop/web:1
            networks: [back, front]
            depends_on:
              migrate: {condition: service_completed_successfully}
            deploy: {update_config: {parallelism: 1}}
        networks:
          back: {}
          front: {name: shop-public}
    """, oneshot={"migrate"})
    assert s.services == ["web"]
    assert s.jobs == [Job("migrate", {"image": "reg/shop/web:1",
                                      "command": ["flask", "db", "upgrade"],
                                      "networks": ["back"]}, ("shop_back",))]
    assert "migrate" not in s.text and "depends_on" not in s.text
    assert s.networks == ["shop_back", "shop-public"]


D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_pinned_images_are_named_by_digest_alone() -> None:
    # The tag follows the whole project's content; the digest only the image's.
    images = {"web": f"reg:5000/shop/web:c-abc@{D1}", "job": f"reg:5000/shop/job:c-abc@{D2}",
              "plain": "reg:5000/shop/plain:c-abc"}
    assert by_digest(images) == {f"reg:5000/shop/web:c-abc@{D1}": f"reg:5000/shop/web@{D1}",
                                 f"reg:5000/shop/job:c-abc@{D2}": f"reg:5000/shop/job@{D2}"}
    s = conv(f"""
        services:
          migrate:
            image: reg:5000/shop/job:c-abc@{D2}
          web:
            image: reg:5000/shop/web:c-abc@{D1}
            deploy: {{update_config: {{parallelism: 2}}}}
          other:
            image: reg:5000/shop/plain:c-abc
            deploy: {{update_config: {{parallelism: 2}}}}
    """, oneshot={"migrate"}, images=by_digest(images))
    assert s.text == out(f"""
        version: '3.9'
        services:
          web:
            image: reg:5000/shop/web@{D1}
            deploy:
              update_config:
                parallelism: 2
          other:
            image: reg:5000/shop/plain:c-abc
            deploy:
              update_config:
                parallelism: 2
    """)
    assert s.jobs[0].spec["image"] == f"reg:5000/shop/job@{D2}"


def test_variables_resolved_and_dollars_escaped_for_stack_deploy() -> None:
    s = conv("""
        services:
          web:
            image: ${IMAGE}
            environment: {PASS: "${PASS:?set it}", LIT: "a$$b", DEF: "${NOPE:-d}"}
            deploy: {update_config: {parallelism: 1}}
    """, lookup={"IMAGE": "reg/web:2", "PASS": "pa$s"}.get)
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: reg/web:2
            environment:
              PASS: pa$$s
              LIT: a$$b
              DEF: d
            deploy:
              update_config:
                parallelism: 1
    """)


def test_a_required_variable_unset_names_where() -> None:
    with pytest.raises(ConfigError, match=r"compose.yaml: \.services\.web\.image: .*set it"):
        conv("""
            services:
              web: {image: "${IMAGE:?set it}"}
        """, lookup={}.get)


def test_keys_a_stack_does_not_take_are_dropped_with_notes() -> None:
    s = conv("""
        name: shop
        x-common: {a: 1}
        services:
          web:
            image: x
            build: .
            pull_policy: always
            container_name: web
            platform: linux/amd64
            restart: unless-stopped
            env_file: [{path: ./missing.env, required: false}, {path: ./app.env}]
            deploy: {update_config: {parallelism: 1}}
    """, {"app.env": FileInfo(A, 0o600, secret=True)})
    assert s.text == out("""
        version: '3.9'
        services:
          web:
            image: x
            env_file:
            - ./app.env
            deploy:
              update_config:
                parallelism: 1
    """)
    assert s.notes == ["top-level 'name' dropped: a stack file has no such key",
                       "service web: 'platform' dropped: a stack does not take it"]


def test_object_names_fit_swarms_limit() -> None:
    name = object_name("shop", "a/very/long/path/" * 6 + "file.conf", C)
    assert len(name) <= 64
    assert name == "shop_a_very_long_path_a_very_long_path_a_very_long_cccccccccccc"
    assert object_name("shop", "../.x", A) == "shop_x_aaaaaaaaaaaa"


def test_durations_and_the_healthcheck_window() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration(10) == 10.0
    assert parse_duration("ten") is None
    assert healthcheck_window({"test": ["CMD", "true"]}) == 180.0  # Docker's defaults
    assert healthcheck_window({"test": ["CMD", "true"], "interval": "1s", "timeout": "1s",
                               "retries": 2}) == 4.0
    assert healthcheck_window({"disable": True}) == 0.0
    assert healthcheck_window(None) == 0.0
