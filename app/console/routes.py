"""The console's routes, gathered for ``app.http.app``."""

from __future__ import annotations

from fastapi import APIRouter

from app.console import pages_address, pages_admin, pages_auth, pages_list
from app.console.pages_list import IMPORT_PATH

router = APIRouter(include_in_schema=False)
for sub in (pages_auth, pages_address, pages_list, pages_admin):
    router.include_router(sub.router)

__all__ = ["IMPORT_PATH", "router"]
