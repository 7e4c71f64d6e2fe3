"""The operator surface for FastAPI apps (extra ``web``): an HTTP API and a live dashboard.

::

    from fastapi import Depends, FastAPI
    from taskiq_abort.web import abort_router

    app = FastAPI()
    app.include_router(
        abort_router(broker, dependencies=[Depends(require_admin)]), prefix="/admin/tasks"
    )

Never imported by the task path: workers and ``abort()`` do not need FastAPI.
"""

from taskiq_abort.web.router import abort_router

__all__ = ["abort_router"]
