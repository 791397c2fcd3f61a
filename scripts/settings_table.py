"""Print the README's settings table from o365ingest.settings.SETTINGS (the one list of names)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from o365ingest.settings import SETTINGS


def main() -> None:
    print("| Setting | Default | Deployed by Bicep | Meaning |")
    print("|---|---|---|---|")
    for spec in SETTINGS:
        default = f"`{spec.default}`" if spec.default not in (None, "") else "—"
        deployed = "secret, never deployed" if spec.secret else ("yes" if spec.deployed else "local only")
        print(f"| `{spec.name}` | {default} | {deployed} | {spec.help.replace('|', '/')} |")


if __name__ == "__main__":
    main()
