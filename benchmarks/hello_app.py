"""The hello-world baseline of the serving benchmark: the same framework (FastAPI on uvicorn, same
settings) with no work behind the route, so CineSync's figures read as ratios to it."""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    """A FastAPI app with the service's route shape and a readiness probe."""
    app = FastAPI(title="hello")

    @app.get("/recommend/{user_id}")
    async def hello(user_id: str, k: int = 10) -> dict[str, object]:
        return {"user_id": user_id, "k": k, "message": "hello world"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
