"""Runs the contacts example in one command: the cyclone-sse daemon, the Django site and
a Celery worker (Redis must run on 127.0.0.1:6379)::

    uv run python extras/django_contacts/run.py

Then open http://127.0.0.1:8000/, log in as alice (password alice) in one browser and
as bob (bob) in another, and press "Import my contacts": a few seconds later the
notification shows on that user's page only.  Ctrl-C stops all three.

``--port`` (Django, 8000) and ``--daemon-port`` (cyclone-sse, 8888) move them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from extras.supervise import stop_on_sigterm, supervise  # noqa: E402

USERS = ("alice", "bob")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--daemon-port", type=int, default=8888)
    args = parser.parse_args()
    daemon_url = f"http://127.0.0.1:{args.daemon_port}"
    env = {**os.environ, "CYCLONE_SSE_URL": daemon_url, "PYTHONUNBUFFERED": "1",
           "DJANGO_SETTINGS_MODULE": "contacts_site.settings",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    sys.path.insert(0, str(HERE))
    os.environ.update(env)
    import django
    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    users = get_user_model()
    for name in USERS:
        if not users.objects.filter(username=name).exists():
            users.objects.create_user(name, password=name)
    keys = settings.CYCLONE_SSE
    processes = [
        subprocess.Popen([str(BIN / "twistd"), "-n", "--pidfile=", "cyclone-sse",
                          f"--port={args.daemon_port}", f"--http-secret={keys['KEY']}",
                          f"--jwt-secret={keys['JWT_SECRET']}"], cwd=ROOT, env=env),
        subprocess.Popen([str(BIN / "celery"), "-A", "contacts_site", "worker",
                          "--pool=solo", "--loglevel=WARNING",
                          "-Q", settings.CELERY_TASK_DEFAULT_QUEUE], cwd=HERE, env=env),
        subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload",
                          f"127.0.0.1:{args.port}"], cwd=HERE, env=env),
    ]
    supervise(processes, [f"{daemon_url}/healthz", f"http://127.0.0.1:{args.port}/login"],
              f"ready: open http://127.0.0.1:{args.port}/ (alice/alice, bob/bob)")


if __name__ == "__main__":
    stop_on_sigterm()
    main()
