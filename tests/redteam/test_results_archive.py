"""The results archive must end as an honest archive ends: junk after a result refuses the run.

Attack: the job writes one good result, then a block of junk where the next header should be.
tarfile treats an invalid header past the first member as the end of the archive, so the junk
(and whatever the job meant by it) would pass silently, the run counted as a partial success.
The publisher's rule is that any sign of misbehaviour refuses the whole run.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from gpenguard.errors import SandboxError
from gpenguard.runner.publish import PlannedImage, Staging, results_budget


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("junk", [b"\x01" * 512, b"not a tar header".ljust(1024, b"x")], ids=["ones", "text"])
def test_junk_after_a_good_result_refuses_the_run(tmp_path: Path, junk: bytes) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plan = tuple(
        PlannedImage(index=i, source=Path(f"/photos/p{i}.jpg"), sandbox_path=f"/in/p{i}.jpg", target=out / f"p{i}.png", sizes=((8, 8),))
        for i in range(2)
    )
    with Staging(out) as staging:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            data = _png()
            info = tarfile.TarInfo(plan[0].member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        body = buffer.getvalue().rstrip(b"\0")
        body += b"\0" * (-len(body) % 512)
        staging.results.write_bytes(body + junk)
        with pytest.raises(SandboxError, match="not a well-formed archive"):
            staging.collect(plan, budget=results_budget(plan))
