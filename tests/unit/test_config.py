"""Loading, interpolation, merge order and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError
from deployer.secrets import MASK, Secret, mask


def load(root: Path, env: str = "prod", environ: dict[str, str] | None = None):
    return load_project(root, env, ENV if environ is None else environ)


def test_merge_order_inventory_group_host(make_project: MakeProject) -> None:
    p = load(make_project())
    web1, web2 = p.hosts
    assert web1.vars["workers"] == 4  # group beats inventory
    assert web2.vars["workers"] == 8  # host beats group
    assert web1.vars["greeting"] == "hello"  # inventory reaches every host
    assert web1.groups == ("web",)
    assert web2.ssh.port == 2222 and web1.ssh.port is None
    assert web1.ssh.user == "deploy" and web2.ssh.user == "deploy"


def test_groups_merge_in_file_order_and_top_level_hosts(make_project: MakeProject) -> None:
    inv = """\
    vars: {a: inv, b: inv}
    groups:
      first: {vars: {a: first}, hosts: {h1: {}}}
      second: {vars: {b: second}, hosts: {h2: null}}
    hosts:
      solo: {address: 10.0.0.9}
    """
    p = load(make_project({"inventories/prod.yaml": inv}))
    by = {h.name: h for h in p.hosts}
    assert by["h1"].vars == {"a": "first", "b": "inv"}
    assert by["h2"].vars == {"a": "inv", "b": "second"}
    assert by["h2"].address == "h2"  # no address: the name is the address
    assert by["solo"].groups == () and by["solo"].address == "10.0.0.9"


def test_var_interpolation_marks_secrets(make_project: MakeProject) -> None:
    p = load(make_project())
    assert p.registry.password == "reg-pass-Xy9"
    assert isinstance(p.registry.password, Secret)
    assert repr(p.registry.password) == f"Secret({MASK!r})"
    assert mask("login reg-pass-Xy9 and db-pass-Qz7") == f"login {MASK} and {MASK}"


def test_var_defaults_and_escapes(make_project: MakeProject) -> None:
    inv = """\
    vars:
      a: "${UNSET_A:-fallback}"
      b: "${EMPTY_B:-used-when-empty}"
      c: "${EMPTY_B-kept-empty}"
      d: "cost $$5 at ${HOSTX}"
      e: "${DB_PASSWORD}"
    hosts: {h1: {}}
    """
    env = {**ENV, "EMPTY_B": "", "HOSTX": "here"}
    p = load(make_project({"inventories/prod.yaml": inv}), environ=env)
    v = p.hosts[0].vars
    assert v["a"] == "fallback"
    assert v["b"] == "used-when-empty"
    assert v["c"] == ""
    assert v["d"] == "cost $5 at here"
    assert v["e"] == "db-pass-Qz7"


def test_missing_var_names_it_with_file_and_line(make_project: MakeProject) -> None:
    root = make_project()
    with pytest.raises(ConfigError) as e:
        load(root, environ={"DB_PASSWORD": "x"})
    msg = str(e.value)
    assert "deployer.yaml:5:" in msg
    assert "registry.password" in msg
    assert "REGISTRY_PASSWORD is not set" in msg


def test_secrets_file_and_environment_wins(make_project: MakeProject) -> None:
    inv = """\
    secrets_file: .deployer/prod.env
    vars: {pw: "${DB_PASSWORD}", other: "${FROM_FILE}"}
    hosts: {h1: {}}
    """
    root = make_project(
        {
            "inventories/prod.yaml": inv,
            ".deployer/prod.env": "# comment\nexport DB_PASSWORD='file-pw'\nFROM_FILE=\"q  v\"\n"
            "REGISTRY_PASSWORD=file-reg\n",
        }
    )
    p = load(root, environ={"DB_PASSWORD": "env-pw"})
    assert p.hosts[0].vars["pw"] == "env-pw"
    assert p.hosts[0].vars["other"] == "q  v"
    assert p.registry.password == "file-reg"


def test_secrets_file_missing(make_project: MakeProject) -> None:
    inv = "secrets_file: .deployer/nope.env\nhosts: {h1: {}}\n"
    with pytest.raises(ConfigError, match="secrets_file not found"):
        load(make_project({"inventories/prod.yaml": inv}))


def test_yaml_syntax_error_has_file_line_column(make_project: MakeProject) -> None:
    inv = "groups:\n  web:\n    hosts: {web-1: {address: 1.2.3.4}\n  bad: [\n"
    with pytest.raises(ConfigError) as e:
        load(make_project({"inventories/prod.yaml": inv}))
    assert "inventories/prod.yaml:4:" in str(e.value)
    assert "YAML syntax error" in str(e.value)


def test_unknown_key_did_you_mean(make_project: MakeProject) -> None:
    inv = "groups:\n  web:\n    hosts:\n      web-1: {adress: 1.2.3.4}\n"
    with pytest.raises(ConfigError) as e:
        load(make_project({"inventories/prod.yaml": inv}))
    msg = str(e.value)
    assert "inventories/prod.yaml:4:" in msg
    assert "groups.web.hosts.web-1.adress" in msg
    assert "did you mean 'address'" in msg


def test_unknown_top_level_key_in_project(make_project: MakeProject) -> None:
    root = make_project({"deployer.yaml": "app: shop\nkeep_relases: 3\n"})
    with pytest.raises(ConfigError, match=r"deployer.yaml:2:1: keep_relases: unknown key "
                       r"'keep_relases' \(did you mean 'keep_releases'\?\)"):
        load(root)


def test_wrong_type(make_project: MakeProject) -> None:
    inv = "ssh: {port: twenty-two}\nhosts: {h1: {}}\n"
    with pytest.raises(ConfigError) as e:
        load(make_project({"inventories/prod.yaml": inv}))
    assert "inventories/prod.yaml:1:" in str(e.value)
    assert "ssh.port" in str(e.value)
    assert "'twenty-two'" in str(e.value)


def test_bad_app_name(make_project: MakeProject) -> None:
    with pytest.raises(ConfigError, match="'Shop_1' is not a valid app name"):
        load(make_project({"deployer.yaml": "app: Shop_1\n"}))


def test_unknown_env_lists_existing(make_project: MakeProject) -> None:
    root = make_project({"inventories/staging.yaml": "hosts: {h: {}}\n"})
    with pytest.raises(ConfigError) as e:
        load(root, env="prdo")
    assert "unknown environment 'prdo'" in str(e.value)
    assert e.value.hint == "environments here: prod, staging"


def test_duplicate_host_across_groups(make_project: MakeProject) -> None:
    inv = "groups:\n  a: {hosts: {h1: {}}}\n  b: {hosts: {h1: {}}}\n"
    with pytest.raises(ConfigError, match="host 'h1' is defined twice"):
        load(make_project({"inventories/prod.yaml": inv}))


def test_duplicate_key_in_same_mapping(make_project: MakeProject) -> None:
    inv = "hosts:\n  h1: {address: 1.1.1.1}\n  h1: {address: 2.2.2.2}\n"
    with pytest.raises(ConfigError, match=r"inventories/prod.yaml:3:3: duplicate key 'h1'"):
        load(make_project({"inventories/prod.yaml": inv}))


@pytest.mark.parametrize("dest", ["../x", "/etc/passwd", "a/../../x", "."])
def test_dest_escaping_release_dir(make_project: MakeProject, dest: str) -> None:
    cfg = f"app: shop\nfiles:\n  - template: templates/app.conf.j2\n    dest: {dest!r}\n"
    with pytest.raises(ConfigError) as e:
        load(make_project({"deployer.yaml": cfg}))
    assert "deployer.yaml:4:" in str(e.value)
    assert "files.0.dest" in str(e.value)


def test_unquoted_mode_is_refused(make_project: MakeProject) -> None:
    cfg = "app: shop\nfiles:\n  - {template: t, dest: d, mode: 0600}\n"
    with pytest.raises(ConfigError, match='quoted octal string'):
        load(make_project({"deployer.yaml": cfg}))


def test_no_hosts(make_project: MakeProject) -> None:
    with pytest.raises(ConfigError, match="no hosts"):
        load(make_project({"inventories/prod.yaml": "vars: {}\n"}))


def test_relative_ssh_paths_resolve_against_project(make_project: MakeProject) -> None:
    inv = "ssh: {identity_file: .deployer/key, known_hosts: .deployer/kh}\nhosts: {h: {}}\n"
    root = make_project({"inventories/prod.yaml": inv})
    h = load(root).hosts[0]
    assert h.ssh.identity_file == str(root.resolve() / ".deployer/key")
    assert h.ssh.known_hosts == str(root.resolve() / ".deployer/kh")


def test_inventory_registry_overrides_project(make_project: MakeProject) -> None:
    inv = BASIC_INV_WITH_REG = (
        "registry: {server: registry.internal:5000, username: d, password: '${DB_PASSWORD}'}\n"
        "hosts: {h: {}}\n"
    )
    del BASIC_INV_WITH_REG
    p = load(make_project({"inventories/prod.yaml": inv}))
    assert p.registry.server == "registry.internal:5000"
    assert p.registry.username == "d"


def test_rollout_batches_validation(make_project: MakeProject) -> None:
    inv = "rollout: {batches: [1, '150%']}\nhosts: {h: {}}\n"
    with pytest.raises(ConfigError, match=r"rollout\.batches"):
        load(make_project({"inventories/prod.yaml": inv}))


def test_inventory_registry_makes_project_registry_vars_optional(make_project: MakeProject) -> None:
    inv = "registry: {server: r:5000, username: u, password: '${INV_PW}'}\nhosts: {h: {}}\n"
    p = load(make_project({"inventories/prod.yaml": inv}),
             environ={"INV_PW": "inv-pw-1", "DB_PASSWORD": "x"})
    assert p.registry.server == "r:5000" and p.registry.password == "inv-pw-1"


def test_default_values_are_not_secrets(make_project: MakeProject) -> None:
    inv = "vars: {user: '${APP_USER:-deployer}', pw: '${DB_PASSWORD}'}\nhosts: {h: {}}\n"
    p = load(make_project({"inventories/prod.yaml": inv}))
    assert p.hosts[0].vars["user"] == "deployer"
    assert not isinstance(p.hosts[0].vars["user"], Secret)
    assert mask("the deployer user") == "the deployer user"
    assert isinstance(p.hosts[0].vars["pw"], Secret)
