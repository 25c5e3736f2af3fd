"""Storage for uploaded files (and large request bodies) that travel to a
job running in another process, such as a Celery worker.

The submitting process writes each file once, under a key that starts with
the job's id; the snapshot refers to it by key with its name, type, size and
SHA-256. The worker reads it back, checks the hash, and deletes it when the
job ends. :meth:`Storage.sweep` removes objects older than a TTL that no job
deleted (a job lost with its message, a worker that crashed for good).

``OFFLOAD_STORAGE`` selects where:

- ``None`` (default): the folder ``offload-uploads`` in the app's instance
  folder. Right for one host, or for several hosts sharing a volume there.
- a folder path: that folder.
- ``"s3://bucket/prefix"``: an S3 bucket through boto3 (``pip install
  'Flask-Offload[s3]'``). boto3 finds credentials, region and endpoint as
  usual (environment, config files, ``AWS_ENDPOINT_URL`` for S3-compatible
  servers).
- any object with the methods of :class:`Storage`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import time
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

_CHUNK = 1 << 20

# What this library stores: "<job id>/<n>" and "<job id>/body", where a job
# id is a Celery task id (a UUID, with or without dashes). A sweep removes
# nothing else: the folder or bucket may hold other files.
_JOB_ID = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"
)
_NAME = re.compile(r"[0-9]+|body")
# LocalStorage.put's partial files, left by a process killed mid-write.
_PART = re.compile(r"\.part-[A-Za-z0-9_]+")
# POSIX: folders are opened without following links, and worked on
# through their descriptors (0 where the platform lacks the flag).
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def is_job_key(key: str) -> bool:
    """Whether ``key`` is one this library writes: ``"<job id>/<n>"`` or
    ``"<job id>/body"``.
    """
    job_id, _, name = key.partition("/")
    return bool(_JOB_ID.fullmatch(job_id) and _NAME.fullmatch(name))


class Storage(t.Protocol):
    """What a storage needs to provide. Keys are ``"<job id>/<name>"``."""

    def put(self, key: str, stream: t.IO[bytes]) -> None:
        """Store the rest of ``stream`` under ``key``."""

    def open(self, key: str) -> t.IO[bytes]:
        """A binary stream of the object; the caller closes it.

        :raises FileNotFoundError: There is no such object.
        """

    def delete(self, key: str) -> None:
        """Delete the object if it exists."""

    def sweep(self, older_than: float) -> int:
        """Delete this library's objects (see :func:`is_job_key`) stored more
        than ``older_than`` seconds ago, and nothing else.

        :return: How many were deleted.
        """


class HashingReader:
    """Wraps a stream, counting and hashing (SHA-256) what is read from it."""

    def __init__(self, stream: t.IO[bytes]) -> None:
        self.stream = stream
        self.size = 0
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.size += len(data)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ValueError(f"{key!r} is not a valid storage key.")
    return parts


class LocalStorage:
    """Files in a folder: for one host, or several sharing a volume."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def __repr__(self) -> str:
        return f"<LocalStorage {self.root!r}>"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *_check_key(key))

    def _open_folder(self, folder: str) -> int:
        """A descriptor of ``folder``, never through a link: one made (or
        swapped in) by someone who can write to the root must not let a
        write or delete reach files outside it. Every later step works
        relative to the descriptor, so the folder cannot change under it.
        """
        flags = os.O_RDONLY | _O_DIRECTORY
        if folder != self.root:
            flags |= _O_NOFOLLOW
        try:
            return os.open(folder, flags)
        except OSError as e:
            if os.path.islink(folder):
                raise OSError(
                    e.errno,
                    f"{folder!r} is a symbolic link, not a job folder of"
                    f" {self.root!r}: Flask-Offload does not write or delete"
                    " through it. Remove it; the storage folder must be writable"
                    " only by the web processes and the workers.",
                ) from None
            raise

    def put(self, key: str, stream: t.IO[bytes]) -> None:
        path = self._path(key)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        dir_fd = self._open_folder(folder)
        try:
            # Write then rename, so a reader never sees a partial file.
            tmp = f".part-{secrets.token_hex(8)}"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW,
                0o600,
                dir_fd=dir_fd,
            )
            try:
                with open(fd, "wb") as out:
                    shutil.copyfileobj(stream, out, _CHUNK)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                os.unlink(tmp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)

    def open(self, key: str) -> t.IO[bytes]:
        return open(self._path(key), "rb")

    def delete(self, key: str) -> None:
        path = self._path(key)
        folder, name = os.path.split(path)
        try:
            dir_fd = self._open_folder(folder)
        except FileNotFoundError:
            return
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        finally:
            os.close(dir_fd)
        if folder != self.root:
            try:
                os.rmdir(folder)  # the job's folder, once empty; never a link
            except OSError:
                pass

    def sweep(self, older_than: float) -> int:
        limit = time.time() - older_than
        removed = 0
        try:
            folders = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        # Only job folders, one level deep: the root may be a shared volume
        # with other files in it.
        for job_id in folders:
            if not _JOB_ID.fullmatch(job_id):
                continue
            folder = os.path.join(self.root, job_id)
            try:
                dir_fd = self._open_folder(folder)  # not a link, a folder
            except OSError:
                continue
            try:
                for name in os.listdir(dir_fd):
                    if not (_NAME.fullmatch(name) or _PART.fullmatch(name)):
                        continue
                    try:
                        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        if info.st_mtime < limit:
                            os.unlink(name, dir_fd=dir_fd)
                            removed += 1
                    except FileNotFoundError:
                        pass
            finally:
                os.close(dir_fd)
            try:
                os.rmdir(folder)  # once empty; rmdir never follows a link
            except OSError:
                pass
        return removed


class S3Storage:
    """Objects in an S3 bucket (or an S3-compatible server), through boto3."""

    def __init__(self, bucket: str, prefix: str = "", client: t.Any = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError as e:
                raise RuntimeError(
                    "OFFLOAD_STORAGE is an s3:// URL, which needs boto3. Install it"
                    " with: pip install 'Flask-Offload[s3]'"
                ) from e
            client = boto3.client("s3")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def __repr__(self) -> str:
        return f"<S3Storage s3://{self.bucket}/{self.prefix}>"

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, stream: t.IO[bytes]) -> None:
        self.client.upload_fileobj(stream, self.bucket, self._key(key))

    def open(self, key: str) -> t.IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from e
            raise
        return t.cast(t.IO[bytes], response["Body"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def sweep(self, older_than: float) -> int:
        limit = time.time() - older_than
        prefix = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        old: list[dict[str, str]] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                # Only this library's keys: the bucket may hold other data.
                if is_job_key(obj["Key"][len(prefix) :]) and (
                    obj["LastModified"].timestamp() < limit
                ):
                    old.append({"Key": obj["Key"]})
        for start in range(0, len(old), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": old[start : start + 1000]}
            )
        return len(old)


def storage_for(app: Flask, setting: t.Any) -> Storage:
    """The storage ``OFFLOAD_STORAGE`` names for ``app``."""
    if setting is None:
        return LocalStorage(os.path.join(app.instance_path, "offload-uploads"))
    if isinstance(setting, (str, os.PathLike)):
        value = os.fspath(setting)
        if value.startswith("s3://"):
            bucket, _, prefix = value[5:].partition("/")
            if not bucket:
                raise ValueError(
                    f"OFFLOAD_STORAGE {value!r} names no bucket. Use"
                    " 's3://bucket' or 's3://bucket/prefix'."
                )
            return S3Storage(bucket, prefix)
        if "://" in value:
            raise ValueError(
                f"OFFLOAD_STORAGE {value!r} is not supported. Use a folder path,"
                " 's3://bucket/prefix', or a storage object."
            )
        return LocalStorage(value)
    if all(hasattr(setting, m) for m in ("put", "open", "delete", "sweep")):
        return t.cast(Storage, setting)
    raise ValueError(
        f"OFFLOAD_STORAGE must be a folder path, an 's3://bucket/prefix' URL or a"
        f" storage object with put, open, delete and sweep, not {setting!r}."
    )
