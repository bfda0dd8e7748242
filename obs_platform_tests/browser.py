"""What the browser tests share: Debian's Chromium (no browser download), the flags it runs headless with on a
machine without a display or network, and where screenshots are kept (the README's pictures come from there)."""

from pathlib import Path

from .test_data_assets import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
