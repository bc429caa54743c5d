"""Create (or reset the password of) MLflow's tracking user, logged in as the admin.

The Job `mlflow-tracking-user` (mlflow.yaml) runs this in the MLflow image, standard
library only. Inputs, all mounted from Secrets:
  $MLFLOW_ADMIN_DIR/username, $MLFLOW_ADMIN_DIR/password   the basic-auth admin
  $MLFLOW_TRACKING_CREDENTIALS_PATH   MLflow's credentials file of the tracking user:
      [mlflow]
      mlflow_tracking_username = cpsweep
      mlflow_tracking_password = ...
The same file is mounted as ~/.mlflow/credentials in the pods that log to MLflow, so
the user this creates is exactly the one they log in as. Exits 0 once that user logs in
and is not an admin; otherwise 1 with the reason (the Job retries).
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

USERS = "/api/2.0/mlflow/users"


def _call(url: str, method: str, auth: tuple[str, str], body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip() else {}


def _error(e: urllib.error.HTTPError) -> str:
    body = e.read().decode(errors="replace")
    try:
        return str(json.loads(body).get("error_code", body))
    except ValueError:
        return body.strip()[:300]


def read_inputs(env: dict[str, str]) -> tuple[str, tuple[str, str], tuple[str, str]]:
    url = env.get("MLFLOW_URL", "http://mlflow:5000").rstrip("/")
    admin_dir = Path(env.get("MLFLOW_ADMIN_DIR", "/etc/mlflow-admin"))
    admin = tuple((admin_dir / k).read_text().strip() for k in ("username", "password"))
    path = Path(env.get("MLFLOW_TRACKING_CREDENTIALS_PATH", "/etc/mlflow-tracking/credentials"))
    ini = configparser.ConfigParser()
    ini.read_string(path.read_text())
    section = dict(ini["mlflow"]) if ini.has_section("mlflow") else {}
    user = (
        section.get("mlflow_tracking_username", "").strip(),
        section.get("mlflow_tracking_password", "").strip(),
    )
    if not all(user):
        raise ValueError(
            f"{path}: needs [mlflow] mlflow_tracking_username and mlflow_tracking_password "
            "(k8s/README.md, Secrets)"
        )
    if user[0] == admin[0]:
        raise ValueError(
            f"{path}: the tracking user {user[0]!r} is the admin; give it a name of its own"
        )
    return url, (admin[0], admin[1]), (user[0], user[1])


def ensure_user(url: str, admin: tuple[str, str], user: tuple[str, str]) -> str:
    """'created' or 'password set'; raises RuntimeError when the user cannot log in."""
    body = {"username": user[0], "password": user[1]}
    try:
        _call(f"{url}{USERS}/create", "POST", admin, body)
        outcome = "created"
    except urllib.error.HTTPError as e:
        code = _error(e)
        if code != "RESOURCE_ALREADY_EXISTS":
            raise RuntimeError(
                f"creating {user[0]!r} as {admin[0]!r}: HTTP {e.code} {code}"
            ) from None
        _call(f"{url}{USERS}/update-password", "PATCH", admin, body)
        outcome = "password set"
    try:
        me = _call(f"{url}{USERS}/current", "GET", user)["user"]
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{user[0]!r} cannot log in: HTTP {e.code} {_error(e)}") from None
    if me.get("is_admin"):
        raise RuntimeError(f"{user[0]!r} is an MLflow admin; the tracking user must not be")
    return outcome


def main() -> int:
    try:
        url, admin, user = read_inputs(dict(os.environ))
    except (OSError, ValueError, KeyError) as e:
        print(f"mlflow-tracking-user: {e}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + float(os.environ.get("MLFLOW_WAIT_S", "300"))
    while True:  # the server may still be starting (a fresh database takes a while)
        try:
            urllib.request.urlopen(f"{url}/health", timeout=10).close()
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"mlflow-tracking-user: {url}/health: {e}", file=sys.stderr)
                return 1
            time.sleep(3)
    try:
        outcome = ensure_user(url, admin, user)
    except (RuntimeError, OSError) as e:
        print(f"mlflow-tracking-user: {e}", file=sys.stderr)
        return 1
    print(f"mlflow-tracking-user: {user[0]!r} {outcome}; it logs in and is not an admin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
