"""The agent's status file: one JSON document under /run/fwsg/, replaced atomically.

``fwsg agent status`` reads it; a status whose writer process is gone says so.
"""

import json
import os

STATUS_DIR = "/run/fwsg"


def status_path(host, netns=None, directory=STATUS_DIR):
    """Where the agent for ``host`` (and namespace) writes its status."""
    name = f"agent-{host}" + (f"@{netns}" if netns else "")
    return os.path.join(directory, "".join(c if c.isalnum() or c in "-_.@" else "_"
                                           for c in name) + ".json")


def write_status(path, doc):
    """Replace the status file with ``doc`` atomically (write, fsync-free rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, sort_keys=True)
    os.replace(tmp, path)


def read_status(path):
    """The status document, with ``running`` false when its writer is gone; None if absent."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"error": f"{path}: unreadable status"}
    pid = doc.get("pid")
    alive = False
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    if not alive:
        doc["running"] = False
        doc["connected"] = False
    return doc
