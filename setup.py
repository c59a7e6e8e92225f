"""Packaging glue that pyproject.toml cannot say: the top-level ``profiles/`` and
``certs/`` directories travel in the wheel as the package data of ``emulator.data.profiles``
and ``emulator.data.certs`` (see emulator/data/__init__.py).  Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["emulator", "emulator.*"]),
        "emulator.data.profiles",
        "emulator.data.certs",
    ],
    package_dir={"emulator.data.profiles": "profiles", "emulator.data.certs": "certs"},
    package_data={
        "emulator": ["py.typed"],
        "emulator.data.profiles": ["*.toml"],
        "emulator.data.certs": ["README.md", "**/*.der", "**/*.pem", "**/*.json"],
    },
)
