"""The small record fwsg keeps next to the kernel: which derived names belong to which user ids
(nft never holds user strings). One JSON file per namespace under /run/fwsg."""

import json
import os

STATE_DIR = os.environ.get("FWSG_STATE_DIR", "/run/fwsg")


def path_for(netns):
    return os.path.join(STATE_DIR, f"{netns or '_default'}.json")


def save(netns, meta):
    """Write the names record atomically; failures are ignored (it is only for display)."""
    try:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = path_for(netns) + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"ports": meta.get("ports", {}), "groups": meta.get("groups", {})}, f)
        os.replace(tmp, path_for(netns))
    except OSError:
        pass


def load(netns):
    try:
        with open(path_for(netns)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def remove(netns):
    try:
        os.unlink(path_for(netns))
    except OSError:
        pass
