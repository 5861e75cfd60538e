import pytest
from twisted.python import usage

from cyclone_sse.options import Options, Settings


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_match_the_original():
    o = parse()
    assert (o["port"], o["listen"], o["broker"], o["http-secret"]) == (
        8888, "127.0.0.1", "http", "")
    assert (o["ssl-port"], o["ssl-cert"], o["ssl-key"]) == (8443, "server.crt", "server.key")
    assert (o["redis-host"], o["redis-port"]) == ("127.0.0.1", 6379)
    assert (o["amqp-exchange-name"], o["amqp-exchange-type"], o["amqp-vhost"]) == (
        "sse-cyclone-server", "direct", "/")
    assert o["use-ssl"] is False and o["app"] is None


def test_short_options_and_original_quirks():
    o = parse("-p", "9000", "-l", "0.0.0.0", "--use-ssl=0", "--app=", "--export-port=",
              "--http-secret=k")
    assert (o["port"], o["listen"], o["use-ssl"], o["app"], o["export-port"]) == (
        9000, "0.0.0.0", False, None, 2003)


def test_shipped_config_file_works_both_ways():
    with open("cyclone-sse.conf") as handle:
        words = handle.read().split()
    assert parse(*words)["port"] == 8888
    o = parse("--config", "cyclone-sse.conf", "--port=9999")
    assert o["port"] == 9999 and o["history-size"] == 1000


def test_config_file_with_comments_and_command_line_override(tmp_path):
    conf = tmp_path / "sse.conf"
    conf.write_text("# my daemon\n--port=7000  # the port\n--heartbeat=5\n")
    o = parse("--config=" + str(conf), "--heartbeat=1")
    assert (o["port"], o["heartbeat"]) == (7000, 1.0)


@pytest.mark.parametrize("argv,named", [
    (["--bogus"], "--bogus"),
    (["--port=http"], "--port"),
    (["--port=70000"], "--port"),
    (["--broker=kafka"], "--broker"),
    (["--history-size=-1"], "--history-size"),
    (["--heartbeat=soon"], "--heartbeat"),
    (["--use-ssl=maybe"], "--use-ssl"),
    (["--app=no.such.module.App"], "--app"),
    (["--config=/no/such/file"], "--config"),
    (["--use-ssl", "--ssl-cert=/no/cert.pem"], "--ssl-cert"),
    (["--ssl-min-version=1.1"], "--ssl-min-version"),
    (["--ssl-ciphers=NO-SUCH-CIPHER"], "--ssl-ciphers"),
    # (a stream takes every channel: a direct exchange cannot route them all to it)
    (["--broker=amqp", "--history=amqp-stream"], "--amqp-exchange-type"),
    (["--broker=redis", "--history=amqp-stream"], "--history"),
    (["--sockjs-channels=a b"], "--sockjs-channels"),
    (["--sockjs-prefix=/close", "--sockjs-test-services=1"], "--sockjs-prefix=/close"),
])
def test_bad_options_stop_start_up_with_a_one_line_error_naming_them(argv, named):
    with pytest.raises(usage.UsageError) as info:
        parse(*argv)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_help_documents_every_option():
    text = str(Options())
    for name in ("--port", "--listen", "--app", "--use-ssl", "--ssl-port", "--ssl-listen",
                 "--ssl-cert", "--ssl-key", "--broker", "--http-secret", "--redis-host",
                 "--redis-port", "--amqp-host", "--amqp-exchange-name", "--export",
                 "--export-host", "--export-port", "--export-path", "--history-size",
                 "--heartbeat", "--retry", "--poll-timeout", "--config", "--cors-origin"):
        assert name in text


def test_settings_accept_options_dicts_and_fill_defaults():
    s = Settings.from_options({"port": 1, "http-secret": "k", "history_size": 3, "junk": 1})
    assert (s.port, s.http_secret, s.history_size, s.heartbeat) == (1, "k", 3, 15.0)


# one source of configuration ---------------------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_the_shipped_config_file_is_rendered_from_the_option_definition():
    from cyclone_sse.options import render_conf
    assert (ROOT / "cyclone-sse.conf").read_text() == render_conf(), \
        "regenerate: python -m cyclone_sse.options conf > cyclone-sse.conf"


def test_the_manual_option_table_is_rendered_from_the_option_definition():
    """docs/reference/options.rst is the table ``render_table`` makes when the site is
    built (tests/test_docs.py builds it)."""
    from tests.manual import page
    assert ".. cyclone-sse-options::" in page("reference/options")


def test_every_option_is_in_help_the_config_file_and_the_manual():
    from dataclasses import fields

    from cyclone_sse.options import render_table
    help_text = str(Options())
    conf = (ROOT / "cyclone-sse.conf").read_text()
    table = render_table()
    for f in fields(Settings):
        name = "--" + f.name.replace("_", "-")
        assert name in help_text, name
        assert f"``{name}``" in table or f", {name}``" in table, name
        if name != "--config":
            assert f"\n{name}=" in "\n" + conf, name


def test_empty_means_default_except_where_it_means_none():
    assert parse("--redis-raw=")["redis-raw"] == ""
    assert parse("--cors-origin=")["cors-origin"] == "*"
    o = parse("--access-log", "--reuse-port")
    assert o["access-log"] is True and o["reuse-port"] is True
    assert parse("--access-log=0")["access-log"] is False


def test_the_history_default_follows_the_broker_and_is_derived_once():
    assert parse()["history"] == "memory"
    assert parse("--broker=redis")["history"] == "redis"
    assert Settings.from_options({"broker": "redis"}).history == "redis"


@pytest.mark.parametrize("argv,named", [
    (["--broker=redis", "--history=memory"], "--history"),
    (["--broker=redis", "--redis-url=http://x"], "--redis-url"),
    (["--broker=amqp", "--amqp-spec=/no/such/spec.xml"], "--amqp-spec"),
    (["--broker=amqp", "--history=redis"], "--history"),
    (["--broker=amqp", "--amqp-url=amqps://h:port/"], "--amqp-url"),
    (["--broker=amqp", "--amqp-url=redis://h/"], "--amqp-url"),
    (["--broker=amqp", "--amqp-ca-file=/no/such/ca.pem"], "--amqp-ca-file"),
    (["--broker=redis", "--redis-key-file=/etc/hostname"], "--redis-key-file"),
    (["--broker=redis", "--redis-cert-file=/no/such.pem"], "--redis-cert-file"),
    (["--cors-origin=a,,b"], "--cors-origin"),
    (["--auth-url=http://user:secret@127.0.0.1/auth"], "--auth-url"),
])
def test_each_broker_checks_its_own_options(argv, named):
    with pytest.raises(usage.UsageError) as info:
        parse(*argv)
    assert named in str(info.value) and "\n" not in str(info.value)


def readme_commands() -> list[list[str]]:
    """The options of every ``twistd ... cyclone-sse ...`` command in the manual (with
    its ``\\`` continuations; a console block's ``$`` prompt and ``uv run`` set aside)."""
    import shlex

    from tests.manual import manual_text
    text = manual_text().replace("\\\n", " ")
    commands = []
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if any(after.strip().startswith("twistd -n:") for after in lines[at + 1:at + 4]):
            continue  # (a command shown with the refusal it gets)
        command = line.strip().removeprefix("$ ").removeprefix("uv run ")
        if line.startswith("    ") and command.startswith("twistd ") and "$(" not in line:
            words = shlex.split(command)
            if "cyclone-sse" in words:  # (not a log line quoted)
                commands.append(words[words.index("cyclone-sse") + 1:])
    return commands


def test_every_daemon_command_in_the_manual_is_accepted(tmp_path, monkeypatch):
    """Each command line the manual shows passes the daemon's option checks as written
    (nothing run), from a folder holding the files they name: the shipped config file,
    a certificate (``server.crt``, ``server.key``) and a secret (``jwt.secret``)."""
    import shutil

    from tests.services import private_ca
    private_ca(tmp_path)
    shutil.copy(ROOT / "cyclone-sse.conf", tmp_path / "cyclone-sse.conf")
    (tmp_path / "jwt.secret").write_text("s" * 64 + "\n")  # (the tutorial's)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 10
    for argv in commands:
        parse(*argv)
