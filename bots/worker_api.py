"""Internal endpoints for workers on other machines (`bots.jobbook.RemoteJobBook`).

Mounted under `/internal/v1` only when `worker_key` is set, and every call must carry it in
`X-Worker-Key`. They expose exactly what a worker needs: begin a job, read its pictures, report
progress, and record the result or the failure — the serving machine stays the only writer of
its SQLite file.
"""

import hashlib
import hmac
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request
from fastapi.responses import Response
from pydantic import SecretStr

from storage import BlobNotFoundError, InvalidBlobIdError

from .jobbook import LocalJobBook, job_to_json

PREFIX = "/internal/v1"


def worker_router(book: LocalJobBook, key: SecretStr | None) -> APIRouter:
    """The serving machine's job book over HTTP, for the `key` holders only."""
    expected = hashlib.sha256(key.get_secret_value().encode()).digest() if key else b""

    def authorised(x_worker_key: Annotated[str | None, Header(alias="X-Worker-Key")] = None):
        given = hashlib.sha256((x_worker_key or "").encode()).digest()
        if not expected or not hmac.compare_digest(given, expected):
            raise HTTPException(401, "A valid X-Worker-Key header is required.")

    router = APIRouter(prefix=PREFIX, dependencies=[Depends(authorised)],
                       include_in_schema=False)

    @router.post("/jobs/{job_id}/begin")
    def begin(job_id: str):
        job = book.begin(job_id)
        return {"job": job_to_json(job) if job is not None else None}

    @router.get("/jobs/{job_id}")
    def state(job_id: str):
        return {"state": book.state(job_id)}

    @router.get("/blobs/{sha}")
    def blob(sha: str):
        try:
            return Response(book.picture(sha), media_type="application/octet-stream")
        except (BlobNotFoundError, InvalidBlobIdError, FileNotFoundError):
            raise HTTPException(404, "No such picture.") from None

    @router.post("/jobs/{job_id}/progress")
    def progress(job_id: str, value: Annotated[float, Body(embed=True, alias="progress",
                                                           ge=0.0, le=1.0)]):
        book.progress(job_id, value)
        return {"ok": True}

    @router.post("/jobs/{job_id}/result")
    async def result(job_id: str, request: Request):
        png = await request.body()
        return {"recorded": await to_thread.run_sync(book.finish_id, job_id, png)}

    @router.post("/jobs/{job_id}/fail")
    def fail(job_id: str, error: Annotated[str, Body(embed=True, max_length=500)]):
        return {"recorded": book.fail(job_id, error)}

    @router.post("/jobs/{job_id}/requeue")
    def requeue(job_id: str):
        book.requeue(job_id)
        return {"ok": True}

    return router
