"""Builds the optional C extension fwsg._fast from csrc/ (Cython, linked to libnftables).

Set FWSG_NO_EXTENSIONS=1 at build time to skip it; fwsg then runs on its pure-Python twin.
"""

import os
import shutil
import subprocess

from setuptools import Extension, setup


def _pkgconfig(lib):
    if not shutil.which("pkg-config"):
        return {"libraries": ["nftables", "nftnl", "mnl", "netfilter_conntrack", "nfnetlink"]}
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs"] + lib.split(), check=True,
                             capture_output=True, text=True).stdout.split()
    except subprocess.CalledProcessError:
        return {"libraries": ["nftables", "nftnl", "mnl", "netfilter_conntrack", "nfnetlink"]}
    cfg = {"include_dirs": [], "library_dirs": [], "libraries": []}
    for tok in out:
        key = {"-I": "include_dirs", "-L": "library_dirs", "-l": "libraries"}.get(tok[:2])
        if key:
            cfg[key].append(tok[2:])
    return cfg


def _extensions():
    if os.environ.get("FWSG_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    ext = Extension("fwsg._fast", ["csrc/_fast.pyx"],
                    **_pkgconfig("libnftables libnftnl libmnl libnetfilter_conntrack"))
    return cythonize([ext], language_level=3, compiler_directives={"boundscheck": False,
                                                                      "wraparound": False})


setup(ext_modules=_extensions())
