"""S3-compatible object storage as a source, through boto3: one object is the backup.

The object is an exact key, or the newest object under a prefix (LastModified, ties by key).
It is downloaded in ranged parts that a few threads fetch ahead and that are read in order, so
memory stays bounded whatever its size; it is hashed while it streams (no second pass) and
handed to the unpacker. boto3 is imported only when a client is built (importing it costs
~0.3 s).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from restore_tests import unpack
from restore_tests.errors import SourceError
from restore_tests.model import VariableName
from restore_tests.sources import secrets
from restore_tests.sources.base import (
    OBJECT_LAST_MODIFIED,
    Fetched,
    FetchRequest,
    RestorePoint,
    Source,
    SourceSettings,
)
from restore_tests.sources.plain import (
    DIGEST_METADATA,
    DIGEST_SIDECAR,
    SIDECAR_SUFFIX,
    HashingReader,
    PlainOptions,
    digest_check,
    newest,
    read_sidecar,
)
from restore_tests.sources.s3_download import (
    PART_WORKERS,
    READ_TIMEOUT_SECONDS,
    ObjectDownload,
    S3Object,
    connection_reason,
    error_code,
    object_url,
    said,
    size_check,
    watchdog,
)
from restore_tests.timing import format_size

PREFLIGHT_TIMEOUT_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 10
REQUEST_ATTEMPTS = 3  # botocore's attempts at one request (standard retry mode)
CREDENTIAL_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
}
REFUSED_CREDENTIALS = {
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
NO_CREDENTIALS = (
    "s3: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or env_from)"
)
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_REGION = re.compile(r"^[a-z0-9-]+$")
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


class S3Settings(PlainOptions):
    """One object in an S3-compatible bucket: an exact key, or the newest under a prefix,
    with the plain options (digest, unpack, max_unpacked, pattern)."""

    type: Literal["s3"]
    endpoint: str | None = Field(
        None,
        description="URL of an S3-compatible server (MinIO, Ceph, Garage, a provider's), "
        "addressed path-style; omitted for AWS S3. Without credentials in it.",
        examples=["https://s3.example.net", "http://127.0.0.1:9000"],
    )
    region: str | None = Field(
        None,
        description="The bucket's region: us-east-1 when omitted with an endpoint; for AWS, "
        "the profile's or the environment's region when omitted.",
        examples=["eu-west-3"],
    )
    bucket: str = Field(
        description="The bucket's name only (the folder goes in key or prefix).",
        examples=["erp-backups"],
    )
    key: str | None = Field(
        None,
        description="The exact key of the backup object (give key or prefix).",
        examples=["nightly/erp-2026-11-23.tar.zst"],
    )
    prefix: str | None = Field(
        None,
        description="Take the newest object under this prefix (by LastModified, ties by key), "
        "narrowed by pattern (a glob on the key's last part). Folder markers are skipped, and "
        "digest sidecars (*.sha256) unless the pattern asks for them.",
        examples=["nightly/", "erp/2026/"],
    )
    version_id: str | None = Field(
        None,
        description="With key: this version of the object, in a versioned bucket.",
        examples=["3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"],
    )
    profile: str | None = Field(
        None,
        description="A named profile of the AWS config files (~/.aws/config, "
        "~/.aws/credentials). Without profile or env_from, the standard AWS chain is used "
        "(environment, config files, instance role).",
        examples=["backups"],
    )
    env_from: list[VariableName] = Field(
        default_factory=list,
        description="Take the credentials from these environment variables, read at run time "
        "and never stored: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and AWS_SESSION_TOKEN "
        "for temporary credentials.",
        examples=[["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]],
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "write the URL without credentials, like https://s3.example.net; they come "
                "from env_from, a profile or the standard AWS chain"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "write the server's URL with its scheme, like https://s3.example.net or "
                "http://127.0.0.1:9000 (omit endpoint for AWS S3)"
            )
        if parts.query or parts.fragment:
            raise ValueError("write the server's URL without ?query or #fragment")
        return value.rstrip("/")

    @field_validator("region")
    @classmethod
    def _region_name(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError("write a region name like eu-west-3 or us-east-1")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if "/" in value:
            raise ValueError(
                "write the bucket's name only, like erp-backups; the folder goes in key or prefix"
            )
        if not _BUCKET.match(value):
            raise ValueError(
                "write a bucket name: letters, digits, '.', '-' or '_', like erp-backups"
            )
        return value

    @field_validator("key")
    @classmethod
    def _object_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or value.endswith("/"):
            raise ValueError(
                "a key names one object; for the newest object under a folder write "
                f"prefix: {value!r} instead"
            )
        if value.startswith("/"):
            raise ValueError(f"write the key without a leading /, like {value.lstrip('/')!r}")
        return value

    @field_validator("env_from")
    @classmethod
    def _credential_variables(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in CREDENTIAL_VARIABLES]
        if unknown:
            raise ValueError(
                "list AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN"
                " (the s3 source reads its credentials from these names only)"
            )
        if names and not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(names):
            raise ValueError("list both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return names

    @model_validator(mode="after")
    def _one_object(self) -> S3Settings:
        if (self.key is None) == (self.prefix is None):
            raise ValueError(
                "give exactly one of key (one object) or prefix (the newest object under it)"
            )
        if self.pattern is not None and self.prefix is None:
            raise ValueError("pattern narrows a prefix: write prefix instead of key, or remove it")
        if self.version_id is not None and self.key is None:
            raise ValueError("version_id needs key (a version of one object), not prefix")
        if self.profile is not None and self.env_from:
            raise ValueError("give profile or env_from, not both")
        return self


class S3Source(Source):
    """One object in an S3-compatible bucket, downloaded and hashed as it streams."""

    name: ClassVar[str] = "s3"
    settings_model: ClassVar[type[SourceSettings]] = S3Settings

    def __init__(self, settings: S3Settings, scratch: Path, no_cache: bool = False) -> None:
        self.settings = settings
        self._session: Any = None
        self._clients: dict[bool, Any] = {}  # probe or not -> client
        self._selected: S3Object | None = None

    @property
    def location(self) -> str:
        settings = self.settings
        where = f"s3://{settings.bucket}/{settings.key or settings.prefix or ''}"
        return f"{where} at {settings.endpoint}" if settings.endpoint else where

    def version(self) -> str | None:
        import boto3

        return f"boto3 {boto3.__version__}"

    # -- credentials, clients and their errors ----------------------------------------------

    def _boto_session(self) -> Any:
        """A boto3 session with credentials from env_from, else the profile, else the chain."""
        if self._session is None:
            import boto3
            from botocore.exceptions import BotoCoreError, ProfileNotFound

            try:
                session = boto3.session.Session(
                    profile_name=self.settings.profile, **self._explicit_credentials()
                )
                credentials = session.get_credentials()
            except ProfileNotFound:
                raise SourceError(
                    f"s3: no profile {self.settings.profile} in the AWS config files"
                ) from None
            except BotoCoreError as error:
                raise SourceError(f"s3: cannot read the credentials: {said(error)}") from None
            if credentials is None:
                raise SourceError(NO_CREDENTIALS)
            self._session = session
        return self._session

    def _explicit_credentials(self) -> dict[str, str]:
        return {
            CREDENTIAL_VARIABLES[name]: secrets.from_env(name, "source.env_from")
            for name in self.settings.env_from
        }

    def client(self, probe: bool = False) -> Any:
        """The boto3 client, built once. The probe's makes one attempt with the preflight's
        timeouts, so that a silent server is told within PREFLIGHT_TIMEOUT_SECONDS."""
        if probe not in self._clients:
            from botocore.config import Config

            config = Config(
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=PREFLIGHT_TIMEOUT_SECONDS if probe else READ_TIMEOUT_SECONDS,
                retries={
                    "mode": "standard",
                    "total_max_attempts": 1 if probe else REQUEST_ATTEMPTS,
                },
                s3={"addressing_style": "path" if self.settings.endpoint else "auto"},
                max_pool_connections=PART_WORKERS + 2,
                # Servers differ: rclone sends the whole object's CRC with a ranged answer.
                # The object is hashed with SHA-256 anyway, and its size compared.
                response_checksum_validation="when_required",
                request_checksum_calculation="when_required",
            )
            session = self._boto_session()
            region = self.settings.region or (
                "us-east-1" if self.settings.endpoint else session.region_name or "us-east-1"
            )
            self._clients[probe] = session.client(
                "s3", endpoint_url=self.settings.endpoint, region_name=region, config=config
            )
        return self._clients[probe]

    def _endpoint(self) -> str:
        if self.settings.endpoint:
            return self.settings.endpoint
        client = next(iter(self._clients.values()), None)
        return str(client.meta.endpoint_url) if client is not None else "AWS S3"

    def explain(self, error: Exception, doing: str, read_timeout: float) -> SourceError:
        """One line for a failed request: refused credentials, no bucket, unreachable, silent."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        bucket = self.settings.bucket
        if isinstance(error, ClientError):
            code, status = error_code(error)
            if code in REFUSED_CREDENTIALS:
                return SourceError(
                    f"s3: the server refused the credentials for s3://{bucket} ({code})"
                )
            if code == "NoSuchBucket":
                return SourceError(f"s3: no bucket {bucket} at {self._endpoint()}")
            return SourceError(f"s3: {doing} failed: {code} (HTTP {status})")
        if isinstance(error, NoCredentialsError):
            return SourceError(NO_CREDENTIALS)
        if isinstance(error, (ConnectTimeoutError, ReadTimeoutError)):
            waited = CONNECT_TIMEOUT_SECONDS if isinstance(error, ConnectTimeoutError) else None
            return SourceError(
                f"s3: no answer from {self._endpoint()} within {waited or read_timeout:g}s"
            )
        if isinstance(error, EndpointConnectionError):
            return SourceError(f"s3: cannot reach {self._endpoint()} ({connection_reason(error)})")
        return SourceError(f"s3: {doing} failed: {said(error)}")

    # -- preflight and selection --------------------------------------------------------------

    def preflight(self) -> None:
        """The endpoint answers and accepts the credentials: a HEAD on the bucket, one attempt."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(probe=True)
        try:
            client.head_bucket(Bucket=self.settings.bucket)
        except ClientError as error:
            self._refusal(client, error)
        except BotoCoreError as error:
            raise self._probe_failure(error) from None

    def _refusal(self, client: Any, error: Exception) -> None:
        """Why the HEAD on the bucket was refused. A HEAD's answer has no body, so no reason:
        a listing of one key asks again. An exact key needs no listing: credentials that may
        read objects but not list them are accepted."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.settings.bucket
        _, status = error_code(error)
        if status == 404:
            raise SourceError(f"s3: no bucket {bucket} at {self._endpoint()}")
        if status != 403:
            raise self._probe_failure(error)
        try:
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except ClientError as listing_error:
            if error_code(listing_error)[0] == "AccessDenied" and self.settings.key is not None:
                return
            raise self._probe_failure(listing_error) from None
        except BotoCoreError as listing_error:
            raise self._probe_failure(listing_error) from None

    def _probe_failure(self, error: Exception) -> SourceError:
        return self.explain(
            error, f"checking s3://{self.settings.bucket}", PREFLIGHT_TIMEOUT_SECONDS
        )

    def select(self) -> RestorePoint:
        """The object named by key, or the newest under the prefix, as the server HEADs it."""
        settings = self.settings
        key = settings.key if settings.key is not None else self._newest_key()
        found = self._selected = self._head(key, settings.version_id)
        return RestorePoint(
            id=found.url,
            short_id=found.name,
            time=found.last_modified,
            time_basis=OBJECT_LAST_MODIFIED,
            size_bytes=found.size,
            description=f"object {found.key} ({found.last_modified:%Y-%m-%d %H:%M} UTC, "
            f"{format_size(found.size)})",
            label=f"object {found.key}",
        )

    def _newest_key(self) -> str:
        """The newest matching key under the prefix; only the best so far is kept, page after
        page (a prefix may hold 100,000 keys)."""
        prefix, pattern = self.settings.prefix or "", self.settings.pattern
        listed = (
            (item["Key"], item["LastModified"], item["Size"])
            for item in self._listing(prefix)
            if is_candidate(item["Key"], pattern)
        )
        best = newest(listed, pattern)
        if best is None:
            where = object_url(self.settings.bucket, prefix)
            matching = f" matches {pattern}" if pattern else ""
            raise SourceError(f"s3: no object under {where}{matching}")
        return best.name

    def _listing(self, prefix: str) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self.client().get_paginator("list_objects_v2")
        try:
            for page in pages.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (BotoCoreError, ClientError) as error:
            where = object_url(self.settings.bucket, prefix)
            raise self.explain(error, f"listing {where}", READ_TIMEOUT_SECONDS) from None

    def _head(self, key: str, version_id: str | None) -> S3Object:
        bucket = self.settings.bucket
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            arguments["VersionId"] = version_id
        answer = self.call(
            "head_object",
            f"reading {object_url(bucket, key)}",
            not_found=f"s3: no object {object_url(bucket, key, version_id)}",
            **arguments,
        )
        version = answer.get("VersionId")
        return S3Object(
            bucket=bucket,
            key=key,
            size=int(answer["ContentLength"]),
            last_modified=answer["LastModified"].astimezone(UTC),
            etag=answer.get("ETag"),
            version_id=version if version and version != "null" else None,
            metadata={name.lower(): value for name, value in answer.get("Metadata", {}).items()},
        )

    # -- fetch ------------------------------------------------------------------------------

    def fetch(self, point: RestorePoint, request: FetchRequest) -> Fetched:
        """Download the object into request.target (unpacked as the settings say), hashed as
        it streams; its checks: the size against the listing, the digest, the unpacking."""
        found = self._object(point)
        expected = self._expected_digest(found)
        settings = self.settings
        check = watchdog(request, found.key)
        with ObjectDownload(self, found, check, request.progress) as download:
            hashing = HashingReader(download)
            unpacked = unpack.store(
                hashing,
                found.name,
                request.target,
                settings.unpack,
                settings.unpack_limit(found.size),
                request.cancelled,
                scratch=request.scratch,
            )
        checks = unpacked.checks()
        if unpacked.read_to_end:  # else unpacking stopped at its limit: the FAIL says why
            digest = digest_check(found.key, expected, hashing.hexdigest(), hashing.bytes_read)
            checks = [size_check(found, download), digest, *checks]
        return Fetched(request.target, checks)

    def _object(self, point: RestorePoint) -> S3Object:
        if self._selected is None or self._selected.url != point.id:
            raise SourceError(f"s3: {point.id} was not selected by this source (select first)")
        return self._selected

    def _expected_digest(self, found: S3Object) -> str | None:
        """The declared SHA-256, read before the download: a missing sidecar stops it early."""
        if self.settings.digest == DIGEST_SIDECAR:
            return self._sidecar_digest(found)
        if self.settings.digest == DIGEST_METADATA:
            declared = found.metadata.get("sha256")
            if declared is None:
                raise SourceError(
                    f"s3: object {found.url} has no x-amz-meta-sha256 (digest: metadata)"
                )
            if not _HEX_DIGEST.match(declared):
                raise SourceError(
                    f"s3: the x-amz-meta-sha256 of {found.url} is not a SHA-256 (64 hex digits)"
                )
            return declared.lower()
        return self.settings.expected_digest

    def _sidecar_digest(self, found: S3Object) -> str:
        from botocore.exceptions import BotoCoreError

        key = found.key + SIDECAR_SUFFIX
        location = object_url(found.bucket, key)
        doing = f"reading {location}"
        missing = f"s3: sidecar {location} not found (digest: {DIGEST_SIDECAR})"
        answer = self.call("get_object", doing, not_found=missing, Bucket=found.bucket, Key=key)
        try:
            with answer["Body"] as body:
                return read_sidecar(body, location)
        except BotoCoreError as error:
            raise self.explain(error, doing, READ_TIMEOUT_SECONDS) from None
        except SourceError as error:
            raise SourceError(f"s3: {error}") from None

    def call(
        self,
        operation: str,
        doing: str,
        not_found: str = "",
        none_for: int | None = None,
        **arguments: Any,
    ) -> Any:
        """One request of the transfer client; its failure as one line (not_found: the
        reason for a 404; none_for: an HTTP status that is an answer of None)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(), operation)(**arguments)
        except ClientError as error:
            status = error_code(error)[1]
            if none_for is not None and status == none_for:
                return None
            if not_found and status == 404:
                raise SourceError(not_found) from None
            raise self.explain(error, doing, READ_TIMEOUT_SECONDS) from None
        except BotoCoreError as error:
            raise self.explain(error, doing, READ_TIMEOUT_SECONDS) from None


def is_candidate(key: str, pattern: str | None) -> bool:
    """Whether a listed key may be the backup, before the pattern: not a folder marker, and
    not a digest sidecar unless a pattern asks for one."""
    name = key.rsplit("/", 1)[-1]
    return bool(name) and (pattern is not None or not name.endswith(SIDECAR_SUFFIX))
