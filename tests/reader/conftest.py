"""Fixtures shared by the reader's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["fixed-size", "per-image"])
def batched_route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each batched route for JPEG/PNG output of a fixed size (pre-cropped, or full images cut to a window). The fixtures' records are small, so
    they take FixedSizeRoute; 'per-image' lowers the record size from which PerImageRoute serves
    them to zero, and the test fails unless that route built the dataset."""
    from cropshard.reader import decode

    built: list[str] = []
    for name in ("fixed-size", "per-image"):
        route = decode.ROUTES[name]
        original = route.build
        monkeypatch.setattr(route, "build", lambda self, *args, _original=original, _name=name: built.append(_name) or _original(self, *args))
    if request.param == "per-image":
        monkeypatch.setattr(decode, "PER_IMAGE_RECORD_BYTES", 0)
    yield request.param
    assert built and set(built) == {request.param}, f"built by {built}, not {request.param}"
