"""Writing key files: atomic, owner-only, and no stray copy of the secrets on failure."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from ..core import KeyRing
from ._config import CommandError

__all__ = ["check_key_file_target", "write_key_file"]


def check_key_file_target(target: Path, *, create_folder: bool) -> None:
    """Fail early, before any secret exists, if ``target`` cannot become a key file.

    Args:
        target: The key file to write.
        create_folder: Create a missing folder (``keygen``) rather than fail (``rotate``).

    Raises:
        CommandError: ``target`` is a folder, or its folder is missing or not a folder.
    """
    if target.is_dir():
        raise CommandError(f"{target} is a folder: give the path of the key file to write")
    folder = target.parent
    if folder.is_dir():
        return
    if folder.exists():
        raise CommandError(f"cannot write {target}: {folder} is not a folder")
    if not create_folder:
        raise CommandError(f"cannot write {target}: the folder {folder} does not exist")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None


def write_key_file(ring: KeyRing, target: Path) -> None:
    """Write ``ring`` to ``target`` (mode 0600), replacing it atomically.

    The secrets go to a temporary file next to ``target`` that is renamed
    over it, so readers see the old file or the new one, never half of one.
    On any failure the temporary file is removed: no copy of the secrets is
    left behind. This is ``KeyRing.save`` plus that clean-up and an fsync.

    Raises:
        CommandError: The file could not be written; ``target`` is unchanged.
    """
    check_key_file_target(target, create_folder=False)
    text = json.dumps(ring.to_dict(), indent=2, sort_keys=True) + "\n"
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
